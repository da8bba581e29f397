"""The policy interface of the FGD simulator, the policy registry, and shared choice helpers.

A policy sees the live :class:`~solver.fgd.cluster.ClusterState` and one pod at a time and answers
with a :data:`Placement` ``(node index, GPU indices)`` or ``None`` (the pod fails and is dropped).
Before the first pod, :meth:`Policy.prepare` tells it the cluster, the typical-pod distribution
(what FGD optimises against) and the run's seeded RNG, which it must use for every random choice
so that a run is reproducible from its seed; :meth:`Policy.pick` chooses among scored nodes with
the run's tie-break rule (first node in the seeded order, or uniform). After each pod,
:meth:`Policy.observe` reports what happened (the runner has already applied the placement).

The runner validates every placement (:meth:`ClusterState.check`): a policy cannot place a pod
where the filters of README §7.3 would reject it. To plug in a new policy::

    class MyPolicy(Policy):
        name = "mine"
        def select(self, state, pod):
            feasible = state.feasible(pod)
            ...
            return node, gpus

    register_policy("mine", MyPolicy)
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from solver.fgd.cluster import ClusterState
from solver.fgd.workload import SimPod, TypicalPods

__all__ = [
    "TIE_BREAKS",
    "Placement",
    "Policy",
    "PolicyFactory",
    "best_fit_gpus",
    "make_policy",
    "pick_best",
    "policy_names",
    "register_policy",
    "resolve_policy",
]

Placement = tuple[int, tuple[int, ...]]
"""(node index into the cluster state, GPU indices on that node; empty for a CPU-only pod)."""


class Policy(abc.ABC):
    """Base class of a placement policy."""

    name: ClassVar[str] = "policy"

    def __init__(self) -> None:
        self.rng: np.random.Generator = np.random.default_rng(0)
        self.typical: TypicalPods | None = None
        self.tie_break: str = "first"

    def pick(self, scores: npt.NDArray[np.int64], feasible: npt.NDArray[np.bool_]) -> int | None:
        """:func:`pick_best` with this policy's tie-break rule (``"first"`` or ``"random"``)."""
        return pick_best(scores, feasible, self.rng if self.tie_break == "random" else None)

    def prepare(self, state: ClusterState, typical: TypicalPods, rng: np.random.Generator) -> None:
        """Called once per run, before the first pod."""
        self.rng = rng
        self.typical = typical

    @abc.abstractmethod
    def select(self, state: ClusterState, pod: SimPod) -> Placement | None:
        """Choose where ``pod`` goes, or ``None`` when no node can take it."""

    def observe(self, state: ClusterState, pod: SimPod, placement: Placement | None) -> None:  # noqa: B027
        """Called after each pod with the placement that was applied (``None``: the pod failed)."""


PolicyFactory = Callable[[], Policy]
_REGISTRY: dict[str, PolicyFactory] = {}


def register_policy(name: str, factory: PolicyFactory, *, replace: bool = False) -> None:
    """Make ``factory`` available under ``name`` (``run``, ``simulate``, the CLI's ``--policy``).

    With several worker processes the factory is pickled by reference, so it must be a
    module-level class or function.
    """
    if name in _REGISTRY and not replace and _REGISTRY[name] is not factory:
        raise ValueError(f"policy {name!r} is already registered")
    _REGISTRY[name] = factory


def policy_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def resolve_policy(policy: str | PolicyFactory) -> PolicyFactory:
    if isinstance(policy, str):
        try:
            return _REGISTRY[policy]
        except KeyError:
            raise ValueError(f"unknown policy {policy!r} (known: {', '.join(policy_names())})") from None
    return policy


def make_policy(policy: str | PolicyFactory) -> Policy:
    return resolve_policy(policy)()


TIE_BREAKS = ("first", "random")


def pick_best(
    scores: npt.NDArray[np.int64],
    feasible: npt.NDArray[np.bool_],
    rng: np.random.Generator | None = None,
) -> int | None:
    """The feasible node with the highest score, ``None`` when no node is feasible.

    Ties: without ``rng``, the first node in the cluster's (seeded) node order — what the FGD
    artifact's scheduler does (its kube-scheduler fork replaces the reservoir sampling of
    ``selectHost`` by "smallest node name", and node names are prefixed by a seeded
    permutation); with ``rng``, uniformly at random (stock kube-scheduler).
    """
    idx = np.flatnonzero(feasible)
    if idx.size == 0:
        return None
    s = scores[idx]
    if rng is None:
        return int(idx[int(np.argmax(s))])
    best = idx[s == s.max()]
    if best.size == 1:
        return int(best[0])
    return int(best[rng.integers(best.size)])


def best_fit_gpus(state: ClusterState, node: int, pod: SimPod) -> tuple[int, ...]:
    """ "best-fit" GPU choice: a share goes to the GPU with the least free milli that still fits
    (first index on ties); whole GPUs are the lowest-index fully free ones."""
    if pod.num_gpu == 0:
        return ()
    if pod.is_share:
        row = state.gpu_free[node]
        fits = np.flatnonzero(row >= pod.milli)
        return (int(fits[np.argmin(row[fits])]),)
    return state.lowest_full_gpus(node, pod.num_gpu)
