"""The kubelet stand-in (:mod:`dynamig.demo.kubelet`) under its test name, and a one-node harness.

:class:`NodeHarness` wires a store, simulated GPUs, the kubelet stand-in and a ``NodeAgent`` together.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from dynamig.demo.kubelet import KubeletSim as FakeKubelet
from dynamig.demo.kubelet import PluginEndpoint

__all__ = ["FakeKubelet", "NodeHarness", "PluginEndpoint"]

# ----------------------------------------------------------------------------- a node under test


class NodeHarness:
    """One simulated node: a store holding the node, simulated GPUs, a fake kubelet and a NodeAgent,
    all in a short temporary directory (unix socket paths are limited to 107 bytes)."""

    def __init__(self, gpus: Sequence[tuple[str, int]], mode: str = "mig", node: str = "node-a",
                 split: int = 4, migparted_timeout_s: float = 30.0, start: bool = True, **config: Any) -> None:
        import shutil
        import sys
        import tempfile

        from deviceplugin.agent import AgentConfig, NodeAgent
        from deviceplugin.sim import SimBackend
        from models.store import InMemoryStore
        from models.types import NodeMode

        self._rmtree = shutil.rmtree
        self.dir = tempfile.mkdtemp(prefix="dp-", dir="/tmp")
        self.node = node
        self.store = InMemoryStore()
        self.store.add_node({"metadata": {"name": node, "labels": {}, "annotations": {}}})
        self.backend = SimBackend.create(os.path.join(self.dir, "gpus.json"), node, gpus, NodeMode(mode))
        self.mig_parted = os.path.join(os.path.dirname(sys.executable), "nvidia-mig-parted-sim")
        self.kubelet = FakeKubelet(os.path.join(self.dir, "plugins"))
        cfg = AgentConfig(mode=NodeMode(mode), split=split, poll_s=0.05, refresh_s=0.2,
                          migparted_timeout_s=migparted_timeout_s, config_dir=os.path.join(self.dir, "cfg"),
                          hook_path=os.path.join(self.dir, "hook"), **config)
        self.agent = NodeAgent(node, self.backend, self.store, self.kubelet.plugin_dir, [self.mig_parted], cfg)
        if start:
            self.start()

    def start(self) -> None:
        self.kubelet.start()
        self.agent.start()
        assert self.kubelet.wait_registered(1, 10), "plugin did not register"
        n = len(self.backend.gpus()) * self.agent.config.split
        assert self.kubelet.wait_for(lambda: len(self.kubelet.devices()) == n, 10), "no ListAndWatch devices"

    def close(self) -> None:
        self.agent.stop()
        self.kubelet.stop()
        self._rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> NodeHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def gpu(self, index: int) -> Any:
        return self.backend.gpus()[index]

    def pod(self, name: str, units: Sequence[dict[str, Any]], layouts: Sequence[dict[str, Any]] = (),
            lock: bool = True, namespace: str = "default", alloc_pod: str | None = None,
            containers: Sequence[dict[str, Any]] | None = None, phase: str = "allocating") -> dict[str, Any]:
        """Create a pod as the extender leaves it after bind. ``units``: dicts with ``gpu`` (index),
        ``kind`` (mig|share), ``profile``/``start`` or ``memory``/``cores``, optional ``c`` and ``u``;
        ``layouts``: dicts with ``gpu`` (index), ``slots`` [(profile, start)], optional ``incremental``."""
        import time as _time

        from models import nodelock
        from models.codecs import (
            POD_ALLOCATION,
            POD_BIND_PHASE,
            POD_BIND_TIME,
            POD_NODE,
            PodAllocation,
            encode_allocation,
        )
        from models.layouts import Slot, make_layout
        from models.plan import LayoutChange, UnitAssignment
        from models.types import UnitKind

        key = f"{namespace}/{name}"
        gpus = self.backend.gpus()
        out_units = []
        for i, u in enumerate(units):
            g = gpus[u["gpu"]]
            kind = UnitKind(u.get("kind", "mig"))
            slot = Slot(u["profile"], u["start"]) if kind is UnitKind.MIG else None
            out_units.append(UnitAssignment(key, u.get("container", "main"), u.get("c", 0), u.get("u", i), self.node,
                                            g.uuid, g.index, kind, u.get("memory", 1024), u.get("cores", 0), slot,
                                            bool(layouts)))
        out_layouts = tuple(LayoutChange(self.node, gpus[c["gpu"]].uuid, make_layout(Slot(p, s) for p, s in c["slots"]),
                                         None, bool(c.get("incremental", False)))
                            for c in layouts)
        alloc = PodAllocation(alloc_pod or key, self.node, tuple(out_units), out_layouts)
        spec_containers = list(containers or [{"name": "main"}])
        obj = self.store.create_pod({
            "metadata": {"name": name, "namespace": namespace, "annotations": {
                POD_ALLOCATION: encode_allocation(alloc), POD_NODE: self.node, POD_BIND_PHASE: phase,
                POD_BIND_TIME: str(int(_time.time()))}},
            "spec": {"containers": spec_containers, "nodeName": self.node},
        })
        if lock:
            nodelock.acquire(self.store, self.node, key, "test-extender", _time.time())
        return obj

    def annotations(self, name: str, namespace: str = "default") -> dict[str, str]:
        return dict(self.store.get_pod(namespace, name)["metadata"].get("annotations") or {})

    def registration(self) -> Any:
        from models.codecs import NODE_GPUS, decode_node

        raw = self.store.get_node(self.node)["metadata"]["annotations"][NODE_GPUS]
        return decode_node(raw)

    def lock_holder(self) -> str | None:
        from models import nodelock

        lock, _ = nodelock.read_lock(self.store, self.node)
        return lock.pod if lock else None
