"""``dynamig deviceplugin``: the node agent (kubelet device plugin, node registration, MIG layouts).

``--backend nvml`` (real nodes) reads the GPUs through NVML and changes layouts with
``nvidia-mig-parted``; ``--backend sim`` takes the node's GPUs from ``--inventory`` into a simulator
state file (``--sim-state``, default ``$DYNAMIG_SIM_STATE`` or ``/tmp/dynamig-sim/<node>.json``) and
uses ``nvidia-mig-parted-sim``. ``--store kube`` (default) talks to the API server; ``--store memory``
keeps the node (from ``--inventory``) in memory, for trying the agent alone.
Node settings come from ``--node-config`` (HAMi's nodeconfig JSON, the entry named after the node),
else from the inventory's node, else hami-core with 10 shares per GPU.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import sys
import threading
from dataclasses import replace
from typing import Any

from dynamig.commands.kubeenv import kube_client
from models.cluster import state_from_inventory
from models.config import Inventory, InventoryNode, load_device_config, load_inventory, load_node_config
from models.errors import ConfigError
from models.signing import load_keyring
from models.store import ClusterStore, InMemoryStore, node_objects
from models.types import NodeMode

log = logging.getLogger("dynamig.deviceplugin")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from deviceplugin.agent import DEFAULT_PLUGIN_DIR

    p = sub.add_parser("deviceplugin", help="run the node agent (kubelet device plugin, MIG layouts, registration)")
    p.add_argument("--node", default=os.environ.get("NODE_NAME") or socket.gethostname(),
                   help="this node's name (default $NODE_NAME, else the host name)")
    p.add_argument("--backend", choices=("nvml", "sim"), default="nvml", help="GPU backend (default nvml)")
    p.add_argument("--inventory", metavar="FILE", help="inventory YAML (the node's GPUs for --backend sim)")
    p.add_argument("--device-config", metavar="FILE", help="HAMi device-config (knownMigGeometries), validated")
    p.add_argument("--node-config", metavar="FILE", help="HAMi nodeconfig JSON (operatingmode, devicesplitcount, ...)")
    p.add_argument("--device-plugin-dir", metavar="DIR", default=DEFAULT_PLUGIN_DIR,
                   help=f"kubelet device-plugin directory (default {DEFAULT_PLUGIN_DIR})")
    p.add_argument("--mig-parted", metavar="PATH",
                   help="nvidia-mig-parted executable (default nvidia-mig-parted; nvidia-mig-parted-sim with "
                        "--backend sim)")
    p.add_argument("--mig-parted-timeout", metavar="S", type=float, default=120.0,
                   help="seconds before a mig-parted run is killed (default 120)")
    p.add_argument("--mig-parted-config-dir", metavar="DIR", help="where mig-parted configs are written")
    p.add_argument("--sim-state", metavar="FILE", help="simulator state file (--backend sim)")
    p.add_argument("--reset-sim", action="store_true", help="start the simulated GPUs afresh from the inventory")
    p.add_argument("--store", choices=("kube", "memory"), default="kube", help="cluster store (default kube)")
    p.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig (default: in-cluster, else ~/.kube/config)")
    p.add_argument("--mig-applier", choices=("mig-parted", "nvml"), default="mig-parted",
                   help="how MIG layouts change (default mig-parted; a nodeconfig migapplier overrides it)")
    p.add_argument("--mode", choices=("mig", "hami-core"), help="override the node's operating mode")
    p.add_argument("--split", type=int, metavar="N", help="override deviceSplitCount (replica IDs per GPU)")
    p.add_argument("--hook-path", metavar="DIR", default="/usr/local",
                   help="HAMi-core HOOK_PATH (libvgpu.so under DIR/vgpu; default /usr/local)")
    p.add_argument("--refresh", metavar="S", type=float, default=10.0, help="GPU re-read period (default 10 s)")
    p.add_argument("--allocation-key-file", metavar="FILE", default=os.environ.get("DYNAMIG_ALLOCATION_KEY_FILE"),
                   help="key(s) that verify the extender's signature on every allocation, one per line "
                        "(default $DYNAMIG_ALLOCATION_KEY_FILE; required with --store kube)")
    return p


def _inventory_node(inv: Inventory | None, node: str) -> InventoryNode | None:
    if inv is None:
        return None
    return next((n for n in inv.nodes if n.name == node), None)


def _mig_parted(args: argparse.Namespace) -> list[str]:
    if args.mig_parted:
        return [args.mig_parted]
    if args.backend == "sim":
        beside = os.path.join(os.path.dirname(sys.executable), "nvidia-mig-parted-sim")
        return [beside if os.path.exists(beside) else (shutil.which("nvidia-mig-parted-sim") or beside)]
    return ["nvidia-mig-parted"]


def _store(args: argparse.Namespace, inv: Inventory | None) -> tuple[ClusterStore, Any]:
    if args.store == "memory":
        store = InMemoryStore()
        if inv is not None and _inventory_node(inv, args.node) is not None:
            for obj in node_objects(state_from_inventory(inv)):
                if obj["metadata"]["name"] == args.node:
                    obj["metadata"]["annotations"] = {}
                    store.add_node(obj)
        else:
            store.add_node({"metadata": {"name": args.node, "labels": {}, "annotations": {}}})
        return store, None
    try:
        from kube import KubeStore
    except ImportError as e:
        raise ConfigError(f"--store kube needs the kube package (kube.KubeStore): {e}") from e
    kstore = KubeStore(kube_client(args.kubeconfig)).start()
    if not kstore.wait_synced(60):
        log.warning("the API server caches did not sync within 60 s; continuing")
    return kstore, kstore


def run(args: argparse.Namespace) -> int:
    from deviceplugin.agent import AgentConfig, NodeAgent
    from deviceplugin.backend import GpuBackend, GpuBackendError
    from deviceplugin.sim import ENV_STATE, SimBackend

    if args.allocation_key_file:
        keys = load_keyring(args.allocation_key_file)
    elif args.store == "kube":
        raise ConfigError("--store kube needs --allocation-key-file FILE (or $DYNAMIG_ALLOCATION_KEY_FILE): without "
                          "it the plugin cannot tell an allocation the extender made from one a pod wrote itself")
    else:
        keys = None
    inv = load_inventory(args.inventory) if args.inventory else None
    inv_node = _inventory_node(inv, args.node)
    config = AgentConfig(migparted_timeout_s=args.mig_parted_timeout, hook_path=args.hook_path,
                         refresh_s=args.refresh, config_dir=args.mig_parted_config_dir, allocation_keys=keys)
    if inv_node is not None:
        config = replace(config, mode=inv_node.mode, split=inv_node.split)
    entry = None
    if args.node_config:
        entry = next((e for e in load_node_config(args.node_config) if e.name == args.node), None)
        if entry is not None:
            config = config.with_node_config(entry)
    if args.device_config:
        loaded = load_device_config(args.device_config)
        for w in loaded.warnings:
            print(f"dynamig deviceplugin: {w}", file=sys.stderr)
        config = replace(config, device_config=loaded.config, resource_name=loaded.config.resources.gpu)
        if loaded.config.split is not None and inv_node is None:  # HAMi's nvidia.deviceSplitCount: the
            config = replace(config, split=loaded.config.split)  # default; nodeconfig overrides it
    if args.node_config:
        entry = next((e for e in load_node_config(args.node_config) if e.name == args.node), None)
        if entry is not None:
            config = config.with_node_config(entry)
    if args.mode:
        config = replace(config, mode=NodeMode(args.mode))
    from deviceplugin.apply import resolve_applier
    config = replace(config, applier=resolve_applier(args.mig_applier, entry.applier if entry is not None else None,
                                                     config.mode, args.node))
    if args.split is not None:
        if args.split < 1:
            raise ConfigError(f"--split must be at least 1, got {args.split}")
        config = replace(config, split=args.split)

    backend: GpuBackend
    try:
        if args.backend == "sim":
            path = args.sim_state or os.environ.get(ENV_STATE) or os.path.join("/tmp/dynamig-sim", f"{args.node}.json")
            if inv is not None:
                backend = SimBackend.from_inventory(path, inv, args.node, reset=args.reset_sim)
            elif os.path.exists(path):
                backend = SimBackend(path)
            else:
                raise ConfigError(f"--backend sim needs --inventory FILE naming node {args.node!r} "
                                  f"(or an existing --sim-state; {path} does not exist)")
        else:
            from deviceplugin.nvml import NvmlBackend

            backend = NvmlBackend()
    except GpuBackendError as e:
        print(f"dynamig deviceplugin: {e}", file=sys.stderr)
        return 1

    store, stoppable = _store(args, inv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    events = None
    if stoppable is not None:
        from kube.client import EventRecorder

        events = EventRecorder(stoppable.client, "dynamig-device-plugin", args.node).pod_event
    from deviceplugin.apply import ApplierNotAvailable
    try:
        agent = NodeAgent(args.node, backend, store, args.device_plugin_dir, _mig_parted(args), config, events)
    except ApplierNotAvailable as e:
        print(f"dynamig deviceplugin: {e}", file=sys.stderr)
        return 2
    log.warning("dynamig deviceplugin: node %s, mode %s, backend %s, plugin dir %s", args.node, config.mode.value,
                args.backend, args.device_plugin_dir)
    agent.start()
    try:
        stop.wait()
    finally:
        agent.stop()
        backend.close()
        if stoppable is not None and hasattr(stoppable, "stop"):
            stoppable.stop()
    return 0
