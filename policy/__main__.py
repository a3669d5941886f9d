"""Entry point of the CrossGuard policy pack: `pulumi preview --policy-pack policy`."""

import sys
from pathlib import Path

# The engine runs the pack from policy/ (pulumi.policy: runpy.run_path("policy")); the rules import the project's
# shared names (workloads/), so the project root goes on the path.  Nothing here needs the render harness (tools/).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import PolicyPack

from policy.pack import ENFORCEMENT, PACK_NAME, build_policies

PolicyPack(name=PACK_NAME, policies=build_policies(), enforcement_level=ENFORCEMENT)
