"""Facts about the EC2 instance types this stack places pods on, each with where it comes from.

Pure data, no Pulumi import: the serving presets validate against it, and the scheduling proof can build its machine
models from it.  Sources:

- vCPU, memory, Neuron devices, NeuronCores and device memory: the EC2 instance type pages for Inf2
  (aws.amazon.com/ec2/instance-types/inf2/), Trn1 (aws.amazon.com/ec2/instance-types/trn1/) and M5/M6i/M7i
  (aws.amazon.com/ec2/instance-types/m6i/ ...), and the Neuron documentation's Inf2/Trn1 architecture pages
  (awsdocs-neuron: each Inferentia2 or Trainium1 device has 2 NeuronCores-v2 and 32 GiB of HBM).
- max pods: ``templates/shared/runtime/eni-max-pods.txt`` of awslabs/amazon-eks-ami (VPC CNI without prefix
  delegation: ENIs x (IPv4 addresses per ENI - 1) + 2).
- on-demand price: AWS price list for us-east-1, Linux, shared tenancy, as recorded on 2026-11-25 (``PRICE_REGION``,
  ``PRICE_DATE``; the figures the preset table and the benchmark report's cost per million tokens use).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

SPECS = "EC2 instance type page"
NEURON_ARCH = "Neuron docs, Inf2/Trn1 architecture: 2 NeuronCores and 32 GiB HBM per device"
ENI_MAX_PODS = "awslabs/amazon-eks-ami eni-max-pods.txt"
PRICE_REGION: Final = "us-east-1"
PRICE_DATE: Final = "2026-11-25"  # when the prices below were taken from the price list
PRICE = f"AWS price list, {PRICE_REGION} on-demand Linux, {PRICE_DATE}"


@dataclass(frozen=True)
class InstanceFacts:
    name: str
    vcpu: int
    memory_gib: int
    max_pods: int
    on_demand_usd_per_hour: float
    neuron_devices: int = 0
    neuron_cores: int = 0
    device_memory_gib: int = 0  # total accelerator (HBM) memory across all Neuron devices
    sources: tuple[str, ...] = (SPECS, ENI_MAX_PODS, PRICE)

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def memory_per_core_gib(self) -> float:
        return self.device_memory_gib / self.neuron_cores if self.neuron_cores else 0.0


def _neuron(name: str, vcpu: int, memory_gib: int, *, devices: int, max_pods: int, price: float) -> InstanceFacts:
    return InstanceFacts(
        name=name,
        vcpu=vcpu,
        memory_gib=memory_gib,
        max_pods=max_pods,
        on_demand_usd_per_hour=price,
        neuron_devices=devices,
        neuron_cores=2 * devices,
        device_memory_gib=32 * devices,
        sources=(SPECS, NEURON_ARCH, ENI_MAX_PODS, PRICE),
    )


_ALL: tuple[InstanceFacts, ...] = (
    # Inferentia2
    _neuron("inf2.xlarge", 4, 16, devices=1, max_pods=58, price=0.7582),
    _neuron("inf2.8xlarge", 32, 128, devices=1, max_pods=234, price=1.9679),
    _neuron("inf2.24xlarge", 96, 384, devices=6, max_pods=737, price=6.4906),
    _neuron("inf2.48xlarge", 192, 768, devices=12, max_pods=737, price=12.9813),
    # Trainium1
    _neuron("trn1.2xlarge", 8, 32, devices=1, max_pods=58, price=1.3438),
    _neuron("trn1.32xlarge", 128, 512, devices=16, max_pods=247, price=21.50),
    # x86 general purpose: the system node group's candidates (and the default pool's smallest sizes).
    InstanceFacts("m5.xlarge", 4, 16, 58, 0.192),
    InstanceFacts("m5.2xlarge", 8, 32, 58, 0.384),
    InstanceFacts("m6i.large", 2, 8, 29, 0.096),
    InstanceFacts("m6i.xlarge", 4, 16, 58, 0.192),
    InstanceFacts("m6i.2xlarge", 8, 32, 58, 0.384),
    InstanceFacts("m7i.xlarge", 4, 16, 58, 0.2016),
    InstanceFacts("m7i.2xlarge", 8, 32, 58, 0.4032),
)

INSTANCES: Final = MappingProxyType({i.name: i for i in _ALL})


def facts(instance_type: str) -> InstanceFacts:
    """The facts of ``instance_type``; a one-line error naming the known types if there are none."""
    try:
        return INSTANCES[instance_type]
    except KeyError:
        raise KeyError(
            f"no instance facts for {instance_type}; known: {', '.join(sorted(INSTANCES))} (add it to "
            "workloads/instances.py with its sources)"
        ) from None
