"""Signed allocations: proof that a pod's ``dynamig.io/`` reservation was written by the extender.

Annotations are writable by whoever may update the pod (its owner included), so neither the device
plugin nor the extender may act on them unless the extender's HMAC-SHA256 proves where they came
from. The extender signs, at reservation time, the exact annotation values it writes together with
the pod's UID and namespace/name; every consumer recomputes the MAC. A copy onto another pod (other
UID or name), a hand-written allocation, or any edit of the signed fields fails verification.

The key is shared by the extender and the device plugins (one Kubernetes Secret, see
docs/security.md). A key file holds one key per line: the first line signs, every line verifies
(rotation: add the new key as a second line, roll, swap the lines, roll, drop the old one).

Pure: the key file is read by :func:`load_keyring` (config loading, like the other loaders here).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .codecs import POD_ALLOCATION, POD_ALLOCATION_SIG, POD_NODE, POD_PLAN_TIME, PodAllocation
from .errors import ConfigError

SIG_VERSION = "v1"
MIN_KEY_BYTES = 32
#: What the MAC covers, in order (each length-prefixed, so no field can run into the next).
_DOMAIN = "dynamig.io/allocation-signature/v1"


@dataclass(frozen=True)
class Keyring:
    """Allocation keys: ``keys[0]`` signs, all of them verify."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a keyring needs at least one key")
        for k in self.keys:
            if len(k) < MIN_KEY_BYTES:
                raise ValueError(f"an allocation key must have at least {MIN_KEY_BYTES} bytes, got {len(k)}")

    @staticmethod
    def key_id(key: bytes) -> str:
        """A public name for a key (first 8 hex digits of its SHA-256), shown in reasons and logs."""
        return hashlib.sha256(key).hexdigest()[:8]

    @property
    def signing_id(self) -> str:
        return self.key_id(self.keys[0])

    def __repr__(self) -> str:  # never print key material
        return f"Keyring({', '.join(self.key_id(k) for k in self.keys)})"


def parse_keyring(text: str, source: str = "allocation key") -> Keyring:
    """One key per non-empty line (surrounding blanks ignored; lines starting with # are comments)."""
    keys = tuple(line.strip().encode() for line in text.splitlines()
                 if line.strip() and not line.strip().startswith("#"))
    if not keys:
        raise ConfigError("no key in the file (one key per line, at least 32 characters)", source)
    for i, k in enumerate(keys, 1):
        if len(k) < MIN_KEY_BYTES:
            raise ConfigError(f"line {i}: key is {len(k)} characters; at least {MIN_KEY_BYTES} are needed", source)
    return Keyring(keys)


def load_keyring(path: str) -> Keyring:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read the allocation key: {e.strerror or e}", path) from None
    except UnicodeDecodeError:
        raise ConfigError("the allocation key file is not UTF-8 text", path) from None
    return parse_keyring(text, path)


def _message(uid: str, pod_key: str, node: str, plan_time: str, allocation: str) -> bytes:
    parts = (_DOMAIN, uid, pod_key, node, plan_time, allocation)
    return "".join(f"{len(p.encode())}:{p}" for p in parts).encode()


def _mac(key: bytes, msg: bytes) -> str:
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def sign_reservation(keys: Keyring, uid: str, pod_key: str, annotations: Mapping[str, Any]) -> str:
    """The ``dynamig.io/allocation-signature`` value for the reservation ``annotations`` (the
    allocation, node and plan-time values exactly as they are written) of the pod ``pod_key``
    (namespace/name) with UID ``uid``."""
    msg = _message(uid, pod_key, str(annotations.get(POD_NODE) or ""), str(annotations.get(POD_PLAN_TIME) or ""),
                   str(annotations.get(POD_ALLOCATION) or ""))
    return f"{SIG_VERSION}:{keys.signing_id}:{_mac(keys.keys[0], msg)}"


def signature_problem(pod: Mapping[str, Any], keys: Keyring | None) -> str | None:
    """Why the pod's allocation cannot be trusted, or None when it can.

    ``keys`` None is the unsigned mode (in-memory clusters, offline planning): every allocation is
    taken as written. The reasons name what failed so that an operator can tell a forged claim from a
    key mismatch after a rotation."""
    if keys is None:
        return None
    meta = pod.get("metadata") or {}
    ann = meta.get("annotations") or {}
    if not ann.get(POD_ALLOCATION):
        return "no dynamig.io/allocation"
    raw = ann.get(POD_ALLOCATION_SIG)
    if not raw:
        return "its dynamig.io/allocation is not signed (not written by the dynamig extender)"
    parts = str(raw).split(":")
    if len(parts) != 3 or parts[0] != SIG_VERSION:
        return f"unreadable {POD_ALLOCATION_SIG} (expected '{SIG_VERSION}:<key id>:<hmac>')"
    _, kid, mac = parts
    key = next((k for k in keys.keys if Keyring.key_id(k) == kid), None)
    if key is None:
        return (f"its allocation was signed with key {kid}, which this component does not hold "
                f"(it holds {', '.join(Keyring.key_id(k) for k in keys.keys)})")
    pod_key = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
    msg = _message(str(meta.get("uid") or ""), pod_key, str(ann.get(POD_NODE) or ""),
                   str(ann.get(POD_PLAN_TIME) or ""), str(ann.get(POD_ALLOCATION)))
    if not hmac.compare_digest(_mac(key, msg), mac):
        return ("its allocation signature does not match (the dynamig.io/ annotations were changed, or copied "
                "from another pod)")
    return None


def trusted_allocation(pod: Mapping[str, Any], alloc: PodAllocation | None,
                       keys: Keyring | None) -> tuple[PodAllocation | None, str | None]:
    """``(alloc, None)`` when the pod's allocation is proven (or there is none), else ``(None, reason)``."""
    if alloc is None:
        return None, None
    why = signature_problem(pod, keys)
    if why is None:
        if alloc.pod != _key(pod):
            return None, f"its allocation was made for pod {alloc.pod}"
        return alloc, None
    return None, f"allocation ignored: {why}"


def _key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
