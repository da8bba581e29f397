"""``dynamig plan``: plan one pod (and optionally a batch of pending pods) against an inventory.

Exit status: 0 the plan was computed (placed or not), 1 user error (a file or field), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from typing import Any

from models.cluster import state_from_inventory, state_from_objects
from models.config import load_inventory
from models.errors import ConfigError, DynamigError
from models.plan import Plan, PodPlacement, UnitAssignment
from models.requests import PodRequest, parse_pod
from models.store import node_objects
from models.types import ClusterState
from models.yamlsrc import load_pod_manifests

POLICIES = ("dynamig", "hami-legacy", "hami-v210", "bestfit")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("plan", help="plan one pod (and a pending batch) against an inventory; print the plan",
                       description="Plan one pod against the cluster in --inventory with the existing pods "
                                   "of --pods; with --pending, plan the pod and the pending pods together.")
    p.add_argument("--inventory", required=True, metavar="FILE", help="inventory YAML (DESIGN §8)")
    p.add_argument("--pods", metavar="FILE", help="existing pods (YAML, one or many documents) with allocations")
    p.add_argument("--pod", required=True, metavar="FILE", help="the pod to plan (one Pod manifest)")
    p.add_argument("--pending", metavar="FILE", help="pending pods planned in the same batch")
    p.add_argument("--policy", default="dynamig", choices=POLICIES, help="planner or baseline (default dynamig)")
    p.add_argument("--nodes", metavar="N1,N2", help="only these candidate nodes")
    p.add_argument("--budget-ms", type=float, default=None, help="time budget per call (default 200; 2000 batch)")
    p.add_argument("--layouts-any", action="store_true", help="also every valid layout, after the templates")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return p


def _parse(manifest: Mapping[str, Any], path: str) -> PodRequest:
    try:
        return parse_pod(manifest)
    except DynamigError as e:
        raise ConfigError(str(e), path) from e


def build_state(inventory: str, pods: str | None, layouts_any: bool) -> tuple[ClusterState, Any]:
    inv = load_inventory(inventory)
    state = state_from_inventory(inv)
    if pods:
        existing = load_pod_manifests(pods)
        state, problems = state_from_objects(node_objects(state), existing, state.layouts_any)
        for p in problems:
            print(f"dynamig plan: warning: {pods}: {p.obj}: {p.message}", file=sys.stderr)
    if layouts_any and not state.layouts_any:
        state = ClusterState(state.nodes, True)
    return state, inv


def unit_doc(u: UnitAssignment) -> dict[str, Any]:
    return {
        "container": u.container, "container_index": u.container_index, "unit": u.unit,
        "gpu": u.gpu, "gpu_index": u.gpu_index, "kind": u.kind.value,
        "profile": u.slot.profile if u.slot else None, "start": u.slot.start if u.slot else None,
        "memory_mib": u.memory_mib, "cores": u.cores, "reconfigure": u.reconfigure,
        "template_index": u.template_index,
    }


def placement_doc(p: PodPlacement) -> dict[str, Any]:
    return {"pod": p.pod, "placed": p.placed, "node": p.node, "units": [unit_doc(u) for u in p.units]}


def plan_doc(plan: Plan, pending: bool) -> dict[str, Any]:
    first = plan.placements[0]
    doc: dict[str, Any] = {
        "pod": first.pod,
        "placed": first.placed,
        "node": first.node,
        "units": [unit_doc(u) for u in first.units],
        "layout_changes": [
            {"node": c.node, "gpu": c.gpu, "template_index": c.template_index, "incremental": c.incremental,
             "layout": [{"profile": s.profile, "start": s.start} for s in c.layout]}
            for c in plan.layout_changes
        ],
        "stages": [{"name": s.name, "value": s.value, "bound": s.bound, "status": s.status,
                    "wall_ms": round(s.wall_ms, 3)} for s in plan.stages],
        "status": plan.status,
        "policy": plan.policy,
        "solve_ms": round(plan.solve_ms, 3),
        "reasons": [{"node": n, "reason": r} for n, r in plan.reasons],
    }
    if pending:
        rest = plan.placements[1:]
        doc["pending_placed"] = sum(1 for p in rest if p.placed)
        doc["pending"] = [placement_doc(p) for p in rest]
    return doc


def _text(plan: Plan, pending: bool) -> str:
    lines = []
    first = plan.placements[0]
    if first.placed:
        lines.append(f"{first.pod}: placed on {first.node} ({plan.status}, {plan.solve_ms:.1f} ms, {plan.policy})")
        for u in first.units:
            what = f"{u.slot.profile}@{u.slot.start}" if u.slot else f"share {u.memory_mib} MiB/{u.cores}%"
            tag = " (re-partition" + (f", template {u.template_index})" if u.template_index is not None else ")") \
                if u.reconfigure else ""
            lines.append(f"  {u.container}[{u.unit}] -> GPU {u.gpu_index} ({u.gpu}) {what}{tag}")
    else:
        lines.append(f"{first.pod}: not placed ({plan.status}, {plan.policy})")
    for c in plan.layout_changes:
        kind = "grow" if c.incremental else "re-partition"
        lines.append(f"  {kind} {c.node}/{c.gpu}: " + " + ".join(f"{s.profile}@{s.start}" for s in c.layout))
    lines.append("stages:")
    for s in plan.stages:
        lines.append(f"  {s.name:<17} value {s.value:<20g} bound {s.bound:<20g} {s.status}")
    if pending:
        rest = plan.placements[1:]
        lines.append(f"pending: {sum(1 for p in rest if p.placed)}/{len(rest)} placed")
        for p in rest:
            lines.append(f"  {p.pod}: " + (f"{p.node} ({len(p.units)} units)" if p.placed else "pending"))
    if plan.reasons and not first.placed:
        lines.append("reasons:")
        lines.extend(f"  {n}: {r}" for n, r in plan.reasons)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from solver import PlannerConfig, plan

    if args.budget_ms is not None and not 0 < args.budget_ms < math.inf:
        print(f"dynamig plan: --budget-ms {args.budget_ms:g}: must be a number of milliseconds > 0", file=sys.stderr)
        return 2
    state, inv = build_state(args.inventory, args.pods, args.layouts_any)
    pods = load_pod_manifests(args.pod)
    if len(pods) != 1:
        raise ConfigError(f"expected exactly one Pod manifest, found {len(pods)}", args.pod)
    pod = _parse(pods[0], args.pod)
    if not pod.wants_gpu:  # not a placement problem: "not placed (infeasible)" would be false
        why = "requests no GPU (no nvidia.com/gpu, gpumem or gpucores, or nvidia.com/gpu: 0): nothing for dynamig " \
              "to place; kube-scheduler places it on its own"
        print(json.dumps({"pod": pod.key, "placed": False, "gpu": False, "reason": why}, indent=2) if args.json
              else f"{pod.key}: {why}")
        return 0
    pending = [_parse(m, args.pending) for m in load_pod_manifests(args.pending)] if args.pending else []
    budget = args.budget_ms if args.budget_ms is not None else (2000.0 if pending else 200.0)
    cfg = PlannerConfig(templates=inv.templates, layouts_any=args.layouts_any or inv.layouts_any,
                        time_budget_ms=budget, policy=args.policy)
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()] if args.nodes else None
    result = plan(state, pod, cfg, pending, nodes)
    if args.json:
        print(json.dumps(plan_doc(result, bool(args.pending)), indent=2))
    else:
        print(_text(result, bool(args.pending)))
    return 0
