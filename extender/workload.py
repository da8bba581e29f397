"""The extender's workload estimate: an :class:`~solver.planner.workload.OnlineWorkload` kept in
memory, fed every GPU pod the extender filters (once per pod), rebuilt from the pods the store
lists on the first filter after a (re)start, and handed to ``solver.plan`` as ``workload=``.

Why: the planner's fragmentation level keeps free capacity for the expected request mix; learned
from the live pods, that mix follows the cluster instead of the built-in prior (issue 12).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from models.errors import RequestError
from models.requests import PodRequest, parse_pod
from models.resources import ResourceNames

#: Pod keys remembered as already counted (a pod filtered again is not counted twice).
SEEN_LIMIT = 65536


class WorkloadTracker:
    """Thread-safe wrapper of one ``OnlineWorkload``; ``prior``: the planner config's workload."""

    def __init__(self, resources: ResourceNames, prior: Any = None) -> None:
        from solver.planner.workload import PRIOR, OnlineWorkload

        self.resources = resources
        self.online = OnlineWorkload(prior if prior is not None else PRIOR)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.rebuilt = False

    def rebuild(self, pods: Iterable[Mapping[str, Any]]) -> int:
        """Observe every GPU pod in ``pods`` (the store's objects) not yet counted, once: after a
        restart the estimate starts from the pods the cluster runs and queues. Returns how many."""
        with self._lock:
            if self.rebuilt:
                return 0
            self.rebuilt = True
            n = 0
            for obj in pods:
                try:
                    req = parse_pod(obj, self.resources)
                except RequestError:
                    continue  # the filter reports bad requests; they say nothing about the mix
                if req.wants_gpu and self._count(req):
                    n += 1
            return n

    def observe(self, req: PodRequest) -> bool:
        """Count one filtered GPU pod (False: already counted)."""
        with self._lock:
            return self._count(req)

    def estimate(self) -> Any:
        with self._lock:
            return self.online.estimate()

    def _count(self, req: PodRequest) -> bool:
        key = req.uid or req.key
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)
        self.online.observe(req)
        return True


__all__ = ["SEEN_LIMIT", "WorkloadTracker"]
