"""MIG layouts: sets of (profile, start) slots on one GPU, their validity and enumeration.

Rules (``reference/mig.md`` §1-3): each slot's start is legal for its profile, memory intervals
do not overlap, compute slices sum to at most the GPU's, per-profile max counts hold, and at
most one media-engine (``+me``) instance exists.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

from .catalog import STANDARD_CLASSES, GpuModel, MigProfile, model, placements
from .errors import LayoutError


@dataclass(frozen=True, order=True)
class Slot:
    """One MIG instance position: a profile at a memory-slice start."""

    profile: str
    start: int

    def __str__(self) -> str:
        return f"{self.profile}@{self.start}"


Layout = tuple[Slot, ...]
"""A layout is a sorted tuple of slots (the canonical form; build one with :func:`make_layout`)."""


def make_layout(slots: Iterable[Slot | tuple[str, int]]) -> Layout:
    return tuple(sorted(s if isinstance(s, Slot) else Slot(s[0], s[1]) for s in slots))


def layout_problems(gpu_model: GpuModel, layout: Iterable[Slot]) -> list[str]:
    """Every rule the layout breaks on this model (empty list = valid)."""
    problems: list[str] = []
    if not gpu_model.mig_capable:
        slots = list(layout)
        return [f"{gpu_model.name} is not MIG-capable"] if slots else []
    used = [False] * gpu_model.memory_slices
    compute = 0
    counts: Counter[str] = Counter()
    media = 0
    for slot in layout:
        if not gpu_model.has_profile(slot.profile):
            problems.append(f"{gpu_model.name} has no profile {slot.profile!r}")
            continue
        p = gpu_model.profile(slot.profile)
        if slot.start not in p.starts:
            problems.append(f"{slot.profile} cannot start at memory slice {slot.start} (allowed: {p.starts})")
            continue
        for i in range(slot.start, slot.start + p.memory_slices):
            if used[i]:
                problems.append(f"{slot} overlaps another instance at memory slice {i}")
                break
            used[i] = True
        compute += p.compute_slices
        counts[p.klass] += 1
        media += p.media
        if counts[p.klass] > p.max_count:
            problems.append(f"more than {p.max_count} {p.klass} instances")
    if compute > gpu_model.compute_slices:
        problems.append(f"compute slices sum to {compute} > {gpu_model.compute_slices}")
    if media > 1:
        problems.append("more than one media-engine (+me) instance")
    return problems


def is_valid(gpu_model: GpuModel, layout: Iterable[Slot]) -> bool:
    return not layout_problems(gpu_model, layout)


def check_layout(gpu_model: GpuModel, layout: Iterable[Slot]) -> Layout:
    lay = make_layout(layout)
    problems = layout_problems(gpu_model, lay)
    if problems:
        raise LayoutError(f"invalid layout {[str(s) for s in lay]} on {gpu_model.name}: {'; '.join(problems)}")
    return lay


def _can_add(gpu_model: GpuModel, lay: Layout, p: MigProfile, start: int) -> bool:
    return is_valid(gpu_model, (*lay, Slot(p.name, start)))


@cache
def enumerate_layouts(
    model_name: str, classes: frozenset[str] = STANDARD_CLASSES, maximal_only: bool = False
) -> tuple[Layout, ...]:
    """Every valid non-empty layout (or only the maximal ones) built from the given profile classes.

    Maximal = no further instance of those classes fits. For 7-slice parts with the standard
    classes this gives 297 layouts, 19 of them maximal (``reference/mig.md`` §5).
    """
    m = model(model_name)
    cands = placements(m.name, classes)
    out: list[Layout] = []

    def grow(i: int, current: list[Slot], compute: int, used: int, counts: Counter[str], media: int) -> None:
        if current:
            out.append(tuple(sorted(current)))
        for j in range(i, len(cands)):
            p, s = cands[j]
            mask = ((1 << p.memory_slices) - 1) << s
            if used & mask or compute + p.compute_slices > m.compute_slices:
                continue
            if counts[p.klass] >= p.max_count or (p.media and media):
                continue
            counts[p.klass] += 1
            current.append(Slot(p.name, s))
            grow(j + 1, current, compute + p.compute_slices, used | mask, counts, media + p.media)
            current.pop()
            counts[p.klass] -= 1

    grow(0, [], 0, 0, Counter(), 0)
    result = sorted(set(out), key=lambda lay: (len(lay), lay))
    if maximal_only:
        result = [lay for lay in result if not any(_can_add(m, lay, p, s) for p, s in cands)]
    return tuple(result)


def profile_counts(layout: Iterable[Slot]) -> dict[str, int]:
    return dict(Counter(s.profile for s in layout))


def realize(gpu_model: GpuModel, counts: Mapping[str, int]) -> Layout:
    """A concrete placement for a profile multiset (a HAMi geometry / mig-parted ``mig-devices``).

    Deterministic: larger profiles first, each at its lowest free legal start, with backtracking.
    The planner, the device plugin and the simulated mig-parted all use this one function, so the
    slot a plan names is the slot the node creates.
    """
    wanted: list[MigProfile] = []
    for name, n in counts.items():
        if n < 0:
            raise LayoutError(f"negative count {n} for {name}")
        wanted.extend([gpu_model.profile(name)] * n)
    wanted.sort(key=lambda p: (-p.memory_slices, -p.compute_slices, p.name))

    def place(i: int, current: list[Slot]) -> Layout | None:
        if i == len(wanted):
            return make_layout(current)
        p = wanted[i]
        for s in p.starts:
            cand = [*current, Slot(p.name, s)]
            if is_valid(gpu_model, cand):
                found = place(i + 1, cand)
                if found is not None:
                    return found
        return None

    found = place(0, [])
    if found is None:
        desc = ", ".join(f"{n}x {name}" for name, n in counts.items() if n)
        raise LayoutError(f"no valid placement of {{{desc}}} on {gpu_model.name}")
    return found


def memory_intervals(gpu_model: GpuModel, layout: Iterable[Slot]) -> list[tuple[int, int]]:
    return [
        (s.start, s.start + gpu_model.profile(s.profile).memory_slices) for s in layout
    ]
