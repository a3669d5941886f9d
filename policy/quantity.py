"""Kubernetes resource quantities as numbers: CPU in millicores, everything else in base units (bytes, counts)."""

from __future__ import annotations

import re
from decimal import Decimal

_SUFFIX: dict[str, Decimal | int] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip
_QUANTITY = re.compile(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)")


class QuantityError(ValueError):
    pass


def parse(value: object) -> Decimal:
    """A quantity (``"500m"``, ``"2Gi"``, ``4``) as a Decimal in base units."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, int | float):
        return Decimal(str(value))
    m = _QUANTITY.fullmatch(str(value).strip())
    if not m or (m.group(2) and m.group(2) not in _SUFFIX):
        raise QuantityError(f"{value!r} is not a quantity")
    return Decimal(m.group(1)) * Decimal(_SUFFIX.get(m.group(2), 1))


def cpu_millis(value: object) -> int:
    return int(parse(value) * 1000)


def amount(resource: str, value: object) -> int:
    """``cpu`` in millicores; any other resource in its base unit (bytes for memory, a count for devices)."""
    return cpu_millis(value) if resource == "cpu" else int(parse(value))


def show(resource: str, value: int) -> str:
    if resource == "cpu":
        return f"{value}m"
    if resource in {"memory", "ephemeral-storage"}:
        return f"{value / 2**20:.0f}Mi"
    return str(value)
