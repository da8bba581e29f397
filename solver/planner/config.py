"""The planner's configuration (frozen, hashable) and its validation."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.config import builtin_device_config
from models.templates import DeviceConfig

from .workload import PRIOR, Workload

#: Every objective level the planner knows, in the default (DESIGN §4) order.
OBJECTIVES: tuple[str, ...] = ("placed", "reconfigurations", "template_order", "fragmentation", "policy", "waste")
POLICIES: tuple[str, ...] = ("dynamig", "hami-legacy", "hami-v210", "bestfit")
ENGINES: tuple[str, ...] = ("auto", "dp", "cpsat")
#: How equal plans are ordered (after every objective level): ``name``: the node that sorts first by
#: name; ``order``: the first node in the order the caller gave (``plan(..., nodes=[...])``, else
#: the state's node order) -- FGD's rule (its scheduler packs nodes in a fixed, seeded order).
TIES: tuple[str, ...] = ("name", "order")

#: The built-in workload prior (see :mod:`.workload`).
DEFAULT_WORKLOAD: Workload = PRIOR


@dataclass(frozen=True)
class PlannerConfig:
    """How :func:`solver.plan` decides.

    ``objective``: the lexicographic levels, highest first (any order of :data:`OBJECTIVES`; a level
    left out is not optimised). ``templates``: HAMi ``knownMigGeometries``. ``layouts_any``: every
    valid maximal layout too, ranked after the templates. ``time_budget_ms``: per call. ``policy``:
    ``dynamig`` (the planner) or a baseline. ``engine``: how the single-pod query is solved
    (``dp``: the exact per-node decomposition; ``cpsat``: one CP-SAT model over all candidate
    nodes; ``auto``: ``dp``). ``workload``: the expected request mix and host ratios that the
    fragmentation level keeps capacity for (:class:`~solver.planner.workload.Workload`; learn one
    online with :class:`~solver.planner.workload.OnlineWorkload`). ``tie``: see :data:`TIES`.
    ``tie_quantum``: on the single-pod path, nodes whose fragmentation values round to the same
    multiple of this many per-mille of a GPU count as tied on that level (FGD's coarse integer
    score does the same); 1 = exact. The batch model always compares exact values.
    ``batch_candidates``: in batch mode, the best nodes kept per pod type (x pods of the type + this).
    """

    objective: tuple[str, ...] = OBJECTIVES
    templates: DeviceConfig = field(default_factory=builtin_device_config)
    layouts_any: bool = False
    time_budget_ms: float = 200.0
    policy: str = "dynamig"
    workers: int = 1
    seed: int = 0
    engine: str = "auto"
    workload: Workload = DEFAULT_WORKLOAD
    batch_candidates: int = 2
    tie: str = "name"
    tie_quantum: int = 1

    def __post_init__(self) -> None:
        unknown = [o for o in self.objective if o not in OBJECTIVES]
        if unknown:
            raise ValueError(f"unknown objective level(s) {unknown}; known: {', '.join(OBJECTIVES)}")
        if len(set(self.objective)) != len(self.objective):
            raise ValueError(f"objective lists a level twice: {list(self.objective)}")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; known: {', '.join(POLICIES)}")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; known: {', '.join(ENGINES)}")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if not isinstance(self.workload, Workload):
            raise ValueError("workload must be a solver.planner.workload.Workload")
        if self.tie_quantum < 1:
            raise ValueError("tie_quantum must be at least 1")
        if self.tie not in TIES:
            raise ValueError(f"unknown tie rule {self.tie!r}; known: {', '.join(TIES)}")
