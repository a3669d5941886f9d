"""CrossGuard resource and stack policies: the real renders are clean, and each policy catches its defect."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from policy.rules import RESOURCE_RULES, RecordArgs, from_record, image_problem
from policy.stack_rules import STACK_RULES
from tools.render import Render


def violations(record: dict[str, Any], config: dict[str, Any] | None = None) -> list[str]:
    found: list[str] = []
    for rule in RESOURCE_RULES:
        rule.validate(from_record(record, config), lambda m, rule=rule: found.append(f"{rule.name}: {m}"))
    return found


def stack_violations(resources: list[dict[str, Any]], config: dict[str, Any] | None = None) -> list[str]:
    found: list[str] = []
    for rule in STACK_RULES:
        rule.validate(resources, config or {}, lambda m, rule=rule: found.append(f"{rule.name}: {m}"))
    return found


def test_the_real_stacks_pass_every_resource_policy(each_stack: Render) -> None:
    found = [f"{r['name']}: {v}" for r in each_stack.resources for v in violations(r)]
    assert found == []


def test_the_real_stacks_pass_every_stack_policy(each_stack: Render) -> None:
    assert stack_violations(each_stack.resources) == []


def record(r: Render, typ: str) -> dict[str, Any]:
    return copy.deepcopy(next(x for x in r.resources if x["type"] == typ))


def test_unencrypted_launch_template_volume(dev: Render) -> None:
    lt = record(dev, "aws:ec2/launchTemplate:LaunchTemplate")
    lt["inputs"]["blockDeviceMappings"][0]["ebs"]["encrypted"] = "false"
    assert violations(lt) == ["ebs-encrypted: launch template volume /dev/xvda is not encrypted"]


def test_imdsv1_launch_template(dev: Render) -> None:
    lt = record(dev, "aws:ec2/launchTemplate:LaunchTemplate")
    lt["inputs"]["metadataOptions"]["httpTokens"] = "optional"
    assert violations(lt) == [
        "imdsv2-required: launch template does not require IMDSv2 (metadataOptions.httpTokens: required)"
    ]


def test_non_rotating_kms_key(dev: Render) -> None:
    key = record(dev, "aws:kms/key:Key")
    key["inputs"]["enableKeyRotation"] = False
    assert violations(key) == ["kms-rotation: KMS key does not rotate (enableKeyRotation)"]


def test_unencrypted_storage_class(dev: Render) -> None:
    sc = record(dev, "kubernetes:storage.k8s.io/v1:StorageClass")
    sc["inputs"]["parameters"]["encrypted"] = "false"
    assert violations(sc) == ['ebs-encrypted: EBS StorageClass does not set parameters.encrypted: "true"']


@pytest.mark.parametrize("typ", ["aws:eks/cluster:Cluster", "eks:index:Cluster"])
def test_control_plane_without_secret_encryption_or_logs(dev: Render, typ: str) -> None:
    c = record(dev, typ)
    if typ == "eks:index:Cluster":
        c["inputs"].pop("encryptionConfigKeyArn")
    else:
        c["inputs"]["encryptionConfig"] = None
    c["inputs"]["enabledClusterLogTypes"] = ["api"]
    assert violations(c) == [
        "eks-secrets-and-logs: EKS secrets are not envelope-encrypted with a KMS key",
        "eks-secrets-and-logs: EKS control-plane logs missing: audit, authenticator",
    ]


def test_open_public_endpoint_is_a_violation_only_in_prod(prod: Render, dev: Render) -> None:
    c = record(prod, "aws:eks/cluster:Cluster")
    c["inputs"]["vpcConfig"]["publicAccessCidrs"] = ["0.0.0.0/0"]
    assert violations(c) == [
        "eks-public-endpoint: the public EKS endpoint is open to the internet in a prod stack; set publicAccessCidrs"
    ]
    assert violations(record(dev, "aws:eks/cluster:Cluster")) == []  # dev is open by default, and allowed
    assert violations(record(dev, "aws:eks/cluster:Cluster"), {"prodStacks": ["dev"]})


def test_open_ingress_only_for_tagged_load_balancers() -> None:
    sg = {
        "type": "aws:ec2/securityGroup:SecurityGroup",
        "name": "sg",
        "urn": "urn:pulumi:dev::p::t::sg",
        "inputs": {"ingress": [{"fromPort": 22, "toPort": 22, "protocol": "tcp", "cidrBlocks": ["0.0.0.0/0"]}]},
    }
    assert violations(sg) == [
        "no-open-ingress: security group allows ingress from ['0.0.0.0/0'] on ports 22-22; "
        "only load balancer groups (tag eks-neuron-llm/load-balancer=true) may"
    ]
    sg["inputs"]["tags"] = {"eks-neuron-llm/load-balancer": "true"}
    assert violations(sg) == []


def test_unencrypted_queue_and_open_bucket() -> None:
    q = {"type": "aws:sqs/queue:Queue", "name": "q", "urn": "urn:pulumi:dev::p::t::q", "inputs": {}}
    assert violations(q) == ["sqs-encrypted: SQS queue has neither SQS-managed SSE nor a KMS key"]
    pab = {
        "type": "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "name": "b",
        "urn": "u",
        "inputs": {"blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True},
    }
    assert violations(pab) == ["s3-public-access-block: bucket public access block leaves restrictPublicBuckets off"]
    bucket = {"type": "aws:s3/bucket:Bucket", "name": "artifacts", "urn": "urn:b", "inputs": {}}
    assert stack_violations([bucket]) == [
        "s3-encrypted-and-private: bucket artifacts has no server-side encryption configuration",
        "s3-encrypted-and-private: bucket artifacts has no public access block",
    ]


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("vllm/vllm-openai", "image vllm/vllm-openai has no tag"),
        (
            "ghcr.io/open-webui/open-webui:latest",
            "image ghcr.io/open-webui/open-webui:latest uses the moving tag latest",
        ),
        ("localhost:5000/app", "image localhost:5000/app has no tag"),
        ("ghcr.io/open-webui/open-webui:v0.6.5", None),
        ("repo/app@sha256:" + "a" * 64, None),
    ],
)
def test_image_pinning(image: str, problem: str | None) -> None:
    assert image_problem(image) == problem


def test_unpinned_image_inside_a_pod_template_is_reported() -> None:
    dep = {
        "type": "kubernetes:apps/v1:Deployment",
        "name": "d",
        "urn": "u",
        "inputs": {
            "kind": "Deployment",
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
        },
    }
    assert violations(dep) == ["pinned-images: image busybox has no tag"]


def test_cost_guard_caps_accelerator_devices() -> None:
    def pool(name: str, devices: str | None) -> dict[str, Any]:
        limits = {"cpu": "100"} | ({"aws.amazon.com/neuron": devices} if devices else {})
        return {
            "type": "kubernetes:karpenter.sh/v1:NodePool",
            "name": name,
            "urn": name,
            "inputs": {
                "kind": "NodePool",
                "metadata": {"name": name},
                "spec": {
                    "limits": limits,
                    "template": {
                        "spec": {"taints": [{"key": "aws.amazon.com/neuron", "value": "true", "effect": "NoSchedule"}]}
                    },
                },
            },
        }

    assert stack_violations([pool("inf2", "12"), pool("trn1", "4")]) == []
    assert stack_violations([pool("inf2", "12"), pool("trn1", "16")]) == [
        "neuron-cost-guard: accelerator pools may launch 28 Neuron devices together; the ceiling (policy config "
        "maxNeuronDevices) is 16"
    ]
    assert stack_violations([pool("inf2", "12"), pool("trn1", "16")], {"maxNeuronDevices": 32}) == []
    assert stack_violations([pool("inf2", None)]) == [
        "neuron-cost-guard: NodePool inf2: accelerator pool without a aws.amazon.com/neuron limit; spend is unbounded"
    ]


def test_record_args_look_like_the_engines() -> None:
    args = RecordArgs("t", {"a": 1}, "urn:pulumi:prod::p::t::n", "n", {"k": "v"})
    assert args.get_config() == {"k": "v"}


def test_an_unencrypted_or_open_gcs_store_is_a_violation(prod: Render) -> None:
    (group,) = prod.of_type("aws:elasticache/replicationGroup:ReplicationGroup")
    assert violations(group) == []
    weak = {
        **group,
        "inputs": {**group["inputs"], "atRestEncryptionEnabled": False, "transitEncryptionMode": "preferred"},
    }
    weak["inputs"].pop("authToken")
    assert violations(weak) == [
        "elasticache-encrypted: ElastiCache replication group is not encrypted at rest (atRestEncryptionEnabled)",
        "elasticache-encrypted: ElastiCache replication group does not require TLS (transitEncryptionEnabled, "
        "transitEncryptionMode)",
        "elasticache-encrypted: ElastiCache replication group asks for no credentials (authToken or user groups)",
    ]


# --- the serving image and its builder (infra/image.py) -----------------------------------------------------------


def test_an_unencrypted_image_repository_is_a_violation(dev: Render) -> None:
    for name in ("serving-image", "serving-build-base"):
        repo = copy.deepcopy(dev.one("aws:ecr/repository:Repository", name))
        assert violations(repo) == []
        repo["inputs"].pop("encryptionConfigurations")
        assert violations(repo) == [
            "ecr-encrypted: ECR repository does not declare its encryption (encryptionConfigurations: AES256 or KMS)"
        ]


def test_a_public_or_unencrypted_builder_is_a_violation(dev: Render) -> None:
    project = record(dev, "aws:codebuild/project:Project")
    assert violations(project) == []
    project["inputs"]["projectVisibility"] = "PUBLIC_READ"
    project["inputs"]["logsConfig"]["s3Logs"] = {"status": "ENABLED", "encryptionDisabled": True}
    project["inputs"]["artifacts"] = {"type": "S3", "encryptionDisabled": True}
    assert violations(project) == [
        "codebuild-encrypted: CodeBuild project writes its S3 logs unencrypted (logsConfig.s3Logs.encryptionDisabled)",
        "codebuild-encrypted: CodeBuild project writes unencrypted artifacts (encryptionDisabled)",
        "no-public-images-or-builds: CodeBuild project is PUBLIC_READ: anyone could read its build logs",
    ]


def test_public_build_sources_or_an_open_registry_policy_are_violations(dev: Render) -> None:
    source = record(dev, "aws:s3/bucketObjectv2:BucketObjectv2")
    assert violations(source) == []
    source["inputs"]["acl"] = "public-read"
    assert violations(source) == ["no-public-images-or-builds: S3 object has the public ACL public-read"]
    open_policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "ecr:BatchGetImage"}],
    }
    policy = {
        "type": "aws:ecr/repositoryPolicy:RepositoryPolicy",
        "name": "p",
        "urn": "u",
        "inputs": {"repository": "x", "policy": json.dumps(open_policy)},
    }
    assert violations(policy) == [
        "no-public-images-or-builds: ECR policy lets everyone (Principal *) in without a condition: images would be "
        "public"
    ]
    open_policy["Statement"][0]["Condition"] = {"StringEquals": {"aws:PrincipalOrgID": "o-123"}}
    policy["inputs"]["policy"] = json.dumps(open_policy)
    assert violations(policy) == []
