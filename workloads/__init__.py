"""Pure functions that build Kubernetes objects (plain dicts) from the stack config; no Pulumi imports here."""
