"""The planner's configuration (frozen, hashable) and its validation."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.config import builtin_device_config
from models.templates import DeviceConfig

#: Every objective level the planner knows, in the default (DESIGN §4) order.
OBJECTIVES: tuple[str, ...] = ("placed", "reconfigurations", "template_order", "fragmentation", "policy", "waste")
POLICIES: tuple[str, ...] = ("dynamig", "hami-legacy", "hami-v210", "bestfit")
ENGINES: tuple[str, ...] = ("auto", "dp", "cpsat")

#: The typical workload the fragmentation level protects: (demand in per-mille of one GPU's memory,
#: weight). A MIG demand of 125 is one memory slice of an 8-slice GPU (a 1g), 250 a 2g, 500 a 3g/4g,
#: 1000 the whole GPU. Weights: small requests are the most frequent.
DEFAULT_WORKLOAD: tuple[tuple[int, int], ...] = ((125, 4), (250, 3), (500, 2), (1000, 1))


@dataclass(frozen=True)
class PlannerConfig:
    """How :func:`solver.plan` decides.

    ``objective``: the lexicographic levels, highest first (any order of :data:`OBJECTIVES`; a level
    left out is not optimised). ``templates``: HAMi ``knownMigGeometries``. ``layouts_any``: every
    valid maximal layout too, ranked after the templates. ``time_budget_ms``: per call. ``policy``:
    ``dynamig`` (the planner) or a baseline. ``engine``: how the single-pod query is solved
    (``dp``: the exact per-node decomposition; ``cpsat``: one CP-SAT model over all candidate
    nodes; ``auto``: ``dp``). ``workload``: the typical demands of the fragmentation level.
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
    workload: tuple[tuple[int, int], ...] = DEFAULT_WORKLOAD
    batch_candidates: int = 2

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
        if not self.workload or any(not 0 < d <= 1000 or w < 0 for d, w in self.workload):
            raise ValueError("workload: (per-mille demand in 1..1000, weight >= 0) pairs")
