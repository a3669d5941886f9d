"""Pulumi type tokens of the resources the program creates and its tests look up by type, in one place.

A type token is what the engine (and the offline render, ``tools/render.py``) records as a resource's ``type``; the
provider SDKs pass them as literals.  Each token here is checked against the render (``tests/test_tokens.py``), so a
token that no resource carries any more fails instead of matching nothing.  Imports nothing.
"""

from typing import Final

# AWS (pulumi-aws)
IAM_ROLE: Final = "aws:iam/role:Role"
IAM_ROLE_POLICY: Final = "aws:iam/rolePolicy:RolePolicy"
IAM_POLICY_ATTACHMENT: Final = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
EKS_CLUSTER: Final = "aws:eks/cluster:Cluster"
EKS_NODE_GROUP: Final = "aws:eks/nodeGroup:NodeGroup"
EKS_ADDON: Final = "aws:eks/addon:Addon"
EKS_ACCESS_ENTRY: Final = "aws:eks/accessEntry:AccessEntry"
EKS_POD_IDENTITY: Final = "aws:eks/podIdentityAssociation:PodIdentityAssociation"
SUBNET: Final = "aws:ec2/subnet:Subnet"
NAT_GATEWAY: Final = "aws:ec2/natGateway:NatGateway"
S3_BUCKET: Final = "aws:s3/bucket:Bucket"
S3_OBJECT: Final = "aws:s3/bucketObjectv2:BucketObjectv2"
ECR_REPOSITORY: Final = "aws:ecr/repository:Repository"
CODEBUILD_PROJECT: Final = "aws:codebuild/project:Project"

# The EKS cluster component (pulumi-eks): a remote component, its children created inside its provider.
EKS_COMPONENT: Final = "eks:index:Cluster"

# Kubernetes (pulumi-kubernetes): a Helm release and the custom resources of Karpenter and KubeRay.
HELM_RELEASE: Final = "kubernetes:helm.sh/v3:Release"
NODE_POOL: Final = "kubernetes:karpenter.sh/v1:NodePool"
NODE_CLASS: Final = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
RAY_SERVICE: Final = "kubernetes:ray.io/v1:RayService"

# This program's dynamic resource (infra/image_build.py): the serving image build.
SERVING_IMAGE_BUILD: Final = "pulumi-python:dynamic/image:ServingImageBuild"
