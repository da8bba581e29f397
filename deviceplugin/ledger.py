"""What this device plugin handed out, remembered on the node (not in the pod's annotations).

A pod's annotations can be edited or removed by its owner; the devices it was served stay in use
by its running containers regardless. So every served unit is recorded here, by pod UID, and
counts as held — no other pod gets it and its GPU is not re-partitioned — until the pod with that
UID is finished or gone. The record is a small JSON file beside the kubelet socket (a hostPath, so
it survives plugin restarts), written atomically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger("dynamig.deviceplugin")

LEDGER_FILE = "dynamig-served.json"
VERSION = 1


@dataclass(frozen=True)
class Served:
    """One unit served: ``device`` is the MIG UUID (MIG) or the GPU UUID (hami-core share)."""

    uid: str
    pod: str  # namespace/name
    container_index: int
    unit: int
    gpu: str
    device: str
    at: float


class ServedLedger:
    """Thread-safe record of served units; ``path`` None keeps it in memory only."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._items: list[Served] = self._load()

    def _load(self) -> list[Served]:
        if self.path is None or not os.path.exists(self.path):
            return []
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
            if not isinstance(doc, dict) or doc.get("v") != VERSION:
                raise ValueError(f"unsupported version {doc.get('v') if isinstance(doc, dict) else doc!r}")
            return [Served(str(x["uid"]), str(x["pod"]), int(x["c"]), int(x["u"]), str(x["gpu"]), str(x["device"]),
                           float(x.get("at", 0))) for x in doc.get("served") or []]
        except (OSError, ValueError, KeyError, TypeError) as e:
            bad = f"{self.path}.unreadable-{int(time.time())}"
            log.error("served-device record %s is unreadable (%s); moved to %s, starting empty: devices served "
                      "before now are protected only by their pods' signed allocations", self.path, e, bad)
            with contextlib.suppress(OSError):
                os.replace(self.path, bad)
            return []

    def _save(self) -> None:
        if self.path is None:
            return
        doc = {"v": VERSION, "served": [{"uid": s.uid, "pod": s.pod, "c": s.container_index, "u": s.unit, "gpu": s.gpu,
                                         "device": s.device, "at": round(s.at, 3)} for s in self._items]}
        d = os.path.dirname(self.path) or "."
        try:
            fd, tmp = tempfile.mkstemp(prefix=".dynamig-served-", dir=d)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, separators=(",", ":"))
            os.replace(tmp, self.path)
        except OSError as e:  # the in-memory record still protects the devices until a restart
            log.error("cannot write the served-device record %s: %s", self.path, e)

    def record(self, items: Iterable[Served]) -> None:
        new = list(items)
        if not new:
            return
        with self._lock:
            keep = {(s.uid, s.container_index, s.unit) for s in new}
            self._items = [s for s in self._items if (s.uid, s.container_index, s.unit) not in keep] + new
            self._save()

    def entries(self) -> tuple[Served, ...]:
        with self._lock:
            return tuple(self._items)

    def prune(self, alive: Callable[[Served], bool]) -> tuple[Served, ...]:
        """Forget the units of pods that are over (``alive`` False); the units still held."""
        with self._lock:
            items = list(self._items)
        verdict = {s.uid: alive(s) for s in {x.uid: x for x in items}.values()}
        gone = [s for s in items if not verdict[s.uid]]
        if gone:
            with self._lock:
                dead = {s.uid for s in gone}
                self._items = [s for s in self._items if s.uid not in dead]
                self._save()
            for uid in sorted({s.uid for s in gone}):
                log.info("served-device record: pod UID %s is over; its devices are free", uid)
        with self._lock:
            return tuple(self._items)
