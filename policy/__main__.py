"""Entry point of the CrossGuard policy pack: `pulumi preview --policy-pack policy`."""

import sys
from pathlib import Path

# The pack runs from policy/; the rules import the project's shared names (workloads/, tools/).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import PolicyPack

from policy.pack import ENFORCEMENT, PACK_NAME, build_policies

PolicyPack(name=PACK_NAME, policies=build_policies(), enforcement_level=ENFORCEMENT)
