"""Extender settings (one frozen object; the CLI and the demo build it)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.config import builtin_device_config
from models.plan import Plan
from models.requests import PodRequest
from models.signing import Keyring
from models.templates import DeviceConfig
from models.types import ClusterState

#: ``plan(state, pod, config, pending=(), nodes=None) -> Plan`` (``solver.plan``'s signature).
PlanFn = Callable[..., Plan]

VERSION = "0.1.0"


def default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class ExtenderConfig:
    scheduler_name: str = "dynamig-scheduler"
    # ---- planning (turned into solver.PlannerConfig unless planner_config is given)
    templates: DeviceConfig = field(default_factory=builtin_device_config)
    layouts_any: bool = False
    objective: tuple[str, ...] | None = None
    policy: str = "dynamig"
    time_budget_ms: float = 200.0
    workers: int = 1
    #: how a single-pod query is solved: auto/dp (exact per-node decomposition) or cpsat (one model)
    engine: str = "auto"
    #: lookahead: plan up to this many pending GPU pods together with CP-SAT in the background
    #: (extender.lookahead; 0 = off) within ``lookahead_budget_ms`` per re-solve
    lookahead: int = 0
    lookahead_budget_ms: float = 1000.0
    seed: int = 0
    planner: PlanFn | None = None  # default: solver.plan
    planner_config: Any = None  # default: solver.PlannerConfig(...) from the fields above
    #: learn the request mix online (extender.workload) and pass it to solver.plan as ``workload=``;
    #: only with the built-in planner (a custom ``planner`` may not take the argument)
    learn_workload: bool = True
    validate_plans: bool = True  # check every plan with models.validate before reserving it
    # ---- service
    max_concurrent_solves: int = 4
    max_replans: int = 3
    max_body_bytes: int = 8 << 20
    identity: str = field(default_factory=default_identity)  # node-lock owner
    lock_expiry_s: float = 300.0
    #: is the extender ``identity`` (a node-lock owner) still running? None: unknown, a foreign lock
    #: then lives until ``lock_expiry_s``. The CLI wires it to the owner's presence Lease.
    holder_alive: Callable[[str], bool] | None = None
    #: a reservation of a pod that is not bound expires this long after its last filter (0: never)
    reservation_ttl_s: float = 180.0
    clock: Callable[[], float] = time.time  # injectable for tests
    is_leader: Callable[[], bool] | None = None  # None: no leader election
    prioritize_max_nodes: int = 16
    # ---- request limits (each refused with a 4xx that names the limit)
    max_units_per_container: int = 64
    max_containers_per_pod: int = 64
    max_json_depth: int = 64
    # ---- webhook
    webhook_ignore_label: str = "dynamig.io/webhook"
    #: exact user names (system:serviceaccount:<namespace>:<name>) that may write every dynamig.io/ pod
    #: annotation: the extender's own service account (docs/security.md)
    trusted_users: tuple[str, ...] = ()
    #: exact user names of the device plugin: may write only codecs.NODE_AGENT_POD_KEYS, on its node's pods
    node_agent_users: tuple[str, ...] = ()
    #: signs every reservation (models.signing); None: unsigned mode (in-memory clusters only)
    allocation_keys: Keyring | None = field(default=None, repr=False)
    deny_privileged: bool = True
    # ---- metrics
    legacy_metrics: bool = False
    hami_metrics: str = "v2.9"  # HAMi release whose metric label set is exported: v2.9 | v2.10
    version: str = VERSION
    revision: str = ""
    build_date: str = ""

    def make_planner(self) -> tuple[PlanFn, Any]:
        """The plan function and its config object."""
        fn = self.planner
        cfg = self.planner_config
        if fn is None or cfg is None:
            import solver  # the real planner; imported lazily so tests can run a fake one

            if fn is None:
                fn = solver.plan
            if cfg is None:
                kw: dict[str, Any] = dict(templates=self.templates, layouts_any=self.layouts_any,
                                          time_budget_ms=self.time_budget_ms, policy=self.policy,
                                          workers=self.workers, seed=self.seed, engine=self.engine)
                if self.objective is not None:
                    kw["objective"] = self.objective
                cfg = solver.PlannerConfig(**kw)
        return fn, cfg


def call_plan(fn: PlanFn, cfg: Any, state: ClusterState, pod: PodRequest,
              nodes: Sequence[str] | None, workload: Any = None) -> Plan:
    """``fn(state, pod, cfg, (), nodes)``, with ``workload=`` when one is given."""
    if workload is None:
        return fn(state, pod, cfg, (), nodes)
    return fn(state, pod, cfg, (), nodes, workload=workload)
