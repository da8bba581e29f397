"""Kubernetes resource quantities (``500m``, ``4Gi``, ``1.5``, ``2e3``) as exact numbers.

``models`` may not import the ``kubernetes`` client (DESIGN §1), so this is the one parser the
domain uses; tests check it agrees with ``kubernetes.utils.parse_quantity``.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_SUFFIX = {
    "Ki": Decimal(1024), "Mi": Decimal(1024) ** 2, "Gi": Decimal(1024) ** 3, "Ti": Decimal(1024) ** 4,
    "Pi": Decimal(1024) ** 5, "Ei": Decimal(1024) ** 6,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}
_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


def parse_quantity(value: object) -> Decimal:
    """The exact value of a quantity, as the API server reads it."""
    if isinstance(value, bool):
        raise QuantityError(f"expected a quantity, got {value!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    s = str(value).strip()
    m = _RE.match(s)
    if not m:
        raise QuantityError(f"{value!r} is not a Kubernetes quantity")
    try:
        return Decimal(m.group(1)) * _SUFFIX[m.group(2) or ""]
    except InvalidOperation:
        raise QuantityError(f"{value!r} is not a Kubernetes quantity") from None


def cpu_milli(value: object) -> int:
    """CPU in millicores, rounded up as kube-scheduler does."""
    return math.ceil(parse_quantity(value) * 1000)


def memory_mib(value: object) -> int:
    """Memory in MiB, rounded up."""
    return math.ceil(parse_quantity(value) / (1024 * 1024))
