"""Leader election with a ``coordination.k8s.io/v1`` Lease (client-go's algorithm, reference §9).

Acquire/renew: GET the Lease; absent -> CREATE with self as holder. Another holder whose record
was seen unchanged for less than ``leaseDurationSeconds`` (by *our* clock, from when we observed
the change) -> back off. Otherwise PUT with the resourceVersion read: holder = self,
``renewTime`` = now; on a holder change also ``acquireTime`` = now and ``leaseTransitions`` + 1.
409 = lost the race. The leader renews every retry period and steps down when it could not renew
within the renew deadline. Times are MicroTime: RFC 3339, UTC, exactly six fractional digits.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from models.errors import Conflict, NotFound, StoreError

from .client import KubeClient

log = logging.getLogger(__name__)

LEASE_DURATION_S = 15.0
RENEW_DEADLINE_S = 10.0
RETRY_PERIOD_S = 2.0


def micro_time(t: float) -> str:
    """``2025-03-01T08:00:00.000000Z``."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(s: Any) -> float | None:
    if not isinstance(s, str) or not s:
        return None
    try:
        return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def default_identity() -> str:
    """kube-scheduler's form: ``<hostname>_<uuid>``."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4()}"


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        identity: str | None = None,
        *,
        lease_duration_s: float = LEASE_DURATION_S,
        renew_deadline_s: float = RENEW_DEADLINE_S,
        retry_period_s: float = RETRY_PERIOD_S,
        clock: Callable[[], float] = time.time,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
    ) -> None:
        if not lease_duration_s > renew_deadline_s > retry_period_s > 0:
            raise ValueError("need lease duration > renew deadline > retry period > 0")
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self.clock = clock
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._last_renew = 0.0
        self._leader = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{self.name}"

    @property
    def is_leader(self) -> bool:
        """True while we hold the lease and renewed it within the renew deadline."""
        return self._leader and self.clock() - self._last_renew <= self.renew_deadline_s

    # ------------------------------------------------------------------ one step
    def _spec(self, now: float, acquire: float, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration_s),
            "acquireTime": micro_time(acquire),
            "renewTime": micro_time(now),
            "leaseTransitions": transitions,
        }

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True if we hold the lease afterwards."""
        now = self.clock()
        try:
            lease = self.client.request("GET", self.path, what=f"lease {self.namespace}/{self.name}")
        except NotFound:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, now, 0),
            }
            try:
                created = self.client.request(
                    "POST", f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases", body=body,
                    what=f"create lease {self.namespace}/{self.name}")
            except Conflict:
                return False
            self._observe(created, now)
            self._last_renew = now
            return True
        spec = lease.get("spec") or {}
        self._observe(lease, now)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration_s)
        if holder and holder != self.identity and self._observed_at + duration > now:
            return False
        if holder == self.identity:
            acquire = parse_micro_time(spec.get("acquireTime")) or now
            transitions = int(spec.get("leaseTransitions") or 0)
        else:
            acquire = now
            transitions = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
        meta = dict(lease.get("metadata") or {})
        meta.pop("managedFields", None)
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {**spec, **self._spec(now, acquire, transitions)}}
        try:
            updated = self.client.request("PUT", self.path, body=body,
                                          what=f"update lease {self.namespace}/{self.name}")
        except Conflict:
            return False
        self._observe(updated, now)
        self._last_renew = now
        return True

    def _observe(self, lease: dict[str, Any], now: float) -> None:
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("acquireTime"),
                  spec.get("leaseTransitions"), spec.get("leaseDurationSeconds"))
        if record != self._observed:
            self._observed = record
            self._observed_at = now

    def release(self) -> bool:
        """Give the lease up (holder cleared, duration 1 s) if we hold it; client-go's ReleaseOnCancel."""
        try:
            lease = self.client.request("GET", self.path)
        except StoreError:
            return False
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return False
        now = self.clock()
        meta = dict(lease.get("metadata") or {})
        meta.pop("managedFields", None)
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {**spec, "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": micro_time(now)}}
        try:
            self.client.request("PUT", self.path, body=body)
        except StoreError:
            return False
        self._set_leader(False)
        return True

    # ------------------------------------------------------------------ loop
    def _set_leader(self, leader: bool) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        log.info("lease %s/%s: %s %s", self.namespace, self.name, self.identity,
                 "is now the leader" if leader else "stopped leading")
        cb = self.on_started_leading if leader else self.on_stopped_leading
        if cb is not None:
            try:
                cb()
            except Exception:  # pragma: no cover
                log.exception("leader callback failed")

    def _attempt(self) -> bool:
        try:
            return self.try_acquire_or_renew()
        except StoreError as e:
            log.warning("lease %s/%s: %s", self.namespace, self.name, e)
            return False
        except Exception as e:  # connection errors from urllib3
            log.warning("lease %s/%s: %s", self.namespace, self.name, e)
            return False

    def run(self) -> None:
        while not self._stop.is_set():
            # acquire
            while not self._stop.is_set():
                if self._attempt():
                    self._set_leader(True)
                    break
                self._stop.wait(self.retry_period_s * (1 + 0.2 * random.random()))
            # renew
            while not self._stop.is_set():
                self._stop.wait(self.retry_period_s)
                if self._stop.is_set():
                    break
                if self._attempt():
                    continue
                if self.clock() - self._last_renew > self.renew_deadline_s or (
                        self._observed and self._observed[0] not in (self.identity, "", None)):
                    self._set_leader(False)
                    break

    def start(self) -> LeaderElector:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="kube-leader-election", daemon=True)
        self._thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if release and self._leader:
            self.release()
        self._set_leader(False)


# ---------------------------------------------------------------------- presence (node-lock owners)

PRESENCE_DURATION_S = 30.0
PRESENCE_RENEW_S = 10.0


def presence_lease_name(identity: str, prefix: str = "dynamig-extender-presence") -> str:
    """One Lease per extender pod: ``<prefix>-<pod name>`` (an identity is ``<pod name>_<uuid>``)."""
    base = identity.rsplit("_", 1)[0] if "_" in identity else identity
    clean = "".join(c if c.isalnum() or c in "-." else "-" for c in base.lower()).strip("-.") or "x"
    return f"{prefix}-{clean}"[:253].rstrip("-.")


class PresenceLease:
    """Says "this extender process is running": a Lease named after its pod, holder = its identity,
    renewed every ``renew_s``. A node lock whose owner's presence Lease names another holder (the
    container restarted), is gone (the pod was deleted: the Lease is owned by the pod) or was not
    renewed for ``duration_s`` belongs to a dead process and may be broken before it expires."""

    def __init__(self, client: KubeClient, namespace: str, identity: str, *,
                 duration_s: float = PRESENCE_DURATION_S, renew_s: float = PRESENCE_RENEW_S,
                 owner_pod: tuple[str, str] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.namespace = namespace
        self.identity = identity
        self.name = presence_lease_name(identity)
        self.duration_s = duration_s
        self.renew_s = renew_s
        self.owner_pod = owner_pod
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _path(self, name: str) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{name}"

    def _owner_refs(self) -> list[dict[str, Any]]:
        if self.owner_pod is None:
            return []
        ns, name = self.owner_pod
        try:
            pod = self.client.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}", what=f"pod {ns}/{name}")
        except StoreError as e:
            log.info("presence lease: own pod %s/%s: %s (no owner reference)", ns, name, e)
            return []
        uid = (pod.get("metadata") or {}).get("uid")
        return [{"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}] if uid else []

    def renew(self) -> bool:
        """One create-or-update; True when the Lease names us with a fresh renewTime."""
        now = self.clock()
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.duration_s),
                "renewTime": micro_time(now)}
        try:
            lease = self.client.request("GET", self._path(self.name), what=f"lease {self.namespace}/{self.name}")
        except NotFound:
            meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
            refs = self._owner_refs()
            if refs:
                meta["ownerReferences"] = refs
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                    "spec": {**spec, "acquireTime": micro_time(now)}}
            try:
                self.client.request("POST", f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases",
                                    body=body, what=f"create lease {self.namespace}/{self.name}")
            except Conflict:
                return False
            return True
        meta = dict(lease.get("metadata") or {})
        meta.pop("managedFields", None)
        old = lease.get("spec") or {}
        if old.get("holderIdentity") != self.identity:
            spec["acquireTime"] = micro_time(now)
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": {**old, **spec}}
        try:
            self.client.request("PUT", self._path(self.name), body=body,
                                what=f"update lease {self.namespace}/{self.name}")
        except Conflict:
            return False
        return True

    def is_alive(self, identity: str) -> bool:
        """Is the extender ``identity`` running? Unknown (the API cannot be read) counts as alive."""
        if identity == self.identity:
            return True
        name = presence_lease_name(identity)
        try:
            lease = self.client.request("GET", self._path(name), what=f"lease {self.namespace}/{name}")
        except NotFound:
            return False
        except Exception as e:
            log.info("presence of %s: %s (assumed alive)", identity, e)
            return True
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != identity:
            return False
        renewed = parse_micro_time(spec.get("renewTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.duration_s)
        return renewed is not None and self.clock() - renewed <= duration

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.renew()
            except Exception as e:
                log.warning("presence lease %s/%s: %s", self.namespace, self.name, e)
            self._stop.wait(self.renew_s)

    def start(self) -> PresenceLease:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kube-presence-lease", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
