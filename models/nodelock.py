"""A node lock over any ClusterStore: one pod at a time between bind and Allocate on a node.

HAMi's semantics (``reference/hami.md`` §6) without its bugs: the value names the pod *and* the
owning extender; it is taken and released with resourceVersion-guarded patches; it expires, or is
broken when its pod is gone; only the holder releases it, and a takeover is recorded so a stale
holder cannot release the new holder's lock (#3096, #2214).
"""

from __future__ import annotations

from collections.abc import Callable

from .codecs import NODE_LOCK, NodeLock, decode_lock
from .errors import CodecError, Conflict, DynamigError, NotFound
from .store import ClusterStore

DEFAULT_EXPIRY_S = 300.0


class LockHeld(DynamigError):
    """Another live pod holds the node lock."""


def read_lock(store: ClusterStore, node: str) -> tuple[NodeLock | None, str]:
    obj = store.get_node(node)
    raw = (obj["metadata"].get("annotations") or {}).get(NODE_LOCK)
    rv = str(obj["metadata"].get("resourceVersion", ""))
    if not raw:
        return None, rv
    try:
        return decode_lock(raw), rv
    except CodecError:
        return None, rv  # unreadable lock: treat as free, it will be overwritten


def acquire(
    store: ClusterStore,
    node: str,
    pod: str,
    owner: str,
    now: float,
    expiry_s: float = DEFAULT_EXPIRY_S,
    pod_exists: Callable[[str], bool] | None = None,
    retries: int = 5,
    stale: Callable[[NodeLock], bool] | None = None,
) -> NodeLock:
    """Take the lock for ``pod`` (re-entrant). Raises :class:`LockHeld` if a live pod holds it.

    A held lock is broken when it expired, its pod is gone (``pod_exists``) or its holder died
    before binding (``stale``: e.g. the owning extender no longer holds its presence Lease)."""
    for _ in range(retries):
        current, rv = read_lock(store, node)
        if current is not None and current.pod != pod:
            expired = now - current.taken_at > expiry_s
            gone = pod_exists is not None and not pod_exists(current.pod)
            if not (expired or gone or (stale is not None and stale(current))):
                raise LockHeld(f"node {node} is locked by pod {current.pod} since {current.taken_at:.0f}")
        lock = NodeLock(now, pod, owner)
        try:
            store.patch_node_annotations(node, {NODE_LOCK: lock.encode()}, resource_version=rv)
        except Conflict:
            continue
        return lock
    raise LockHeld(f"node {node}: lost {retries} races for the node lock")


def release(store: ClusterStore, node: str, pod: str, retries: int = 5) -> bool:
    """Release the lock if ``pod`` holds it; True if released, False if someone else holds it."""
    for _ in range(retries):
        try:
            current, rv = read_lock(store, node)
        except NotFound:
            return False
        if current is None or current.pod != pod:
            return False
        try:
            store.patch_node_annotations(node, {NODE_LOCK: None}, resource_version=rv)
        except Conflict:
            continue
        return True
    return False
