"""``dynamig extender``: run the scheduler extender (filter, prioritize, bind, webhook, monitor) and
its metrics server.

``--store kube`` (default) talks to the API server (in-cluster config, else the kubeconfig);
``--store memory`` serves an in-memory cluster: the nodes of ``--inventory`` (every device plugin
registered, GPUs idle) and the pods of ``--pods`` (existing allocations as their annotations).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from extender import ExtenderConfig, create_app
from extender import run as serve
from models.cluster import state_from_inventory
from models.config import load_device_config, load_inventory
from models.errors import ConfigError, Conflict
from models.resources import DEFAULT_RESOURCES
from models.store import ClusterStore, InMemoryStore, node_objects
from models.templates import DeviceConfig
from models.yamlsrc import load_pod_manifests

log = logging.getLogger("dynamig.extender")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "extender", help="run the scheduler extender service (and its metrics server)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", choices=("kube", "memory"), default="kube",
                   help="cluster source: the API server (default) or an in-memory cluster from --inventory")
    p.add_argument("--inventory", metavar="FILE", help="inventory YAML (nodes; required with --store memory)")
    p.add_argument("--pods", metavar="FILE", help="Pod manifests (YAML, one or many documents) for --store memory")
    p.add_argument("--device-config", metavar="FILE",
                   help="HAMi device-config (knownMigGeometries); default: the inventory's, else built-in")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8888, help="extender port (default 8888)")
    p.add_argument("--metrics-port", type=int, default=9395, help="metrics port (default 9395; -1 disables)")
    p.add_argument("--tls-cert-file", metavar="F", help="serve HTTPS with this certificate (needs --tls-key-file)")
    p.add_argument("--tls-key-file", metavar="F", help="private key for --tls-cert-file")
    p.add_argument("--legacy-metrics", action="store_true", help="also export HAMi's legacy camelCase metrics")
    p.add_argument("--hami-metrics", choices=("v2.9", "v2.10"), default="v2.9",
                   help="HAMi release whose metric label set to export (default v2.9)")
    p.add_argument("--scheduler-name", default="dynamig-scheduler",
                   help="schedulerName the webhook sets on GPU pods (default dynamig-scheduler)")
    p.add_argument("--leader-elect", action="store_true", help="run leader election on a Lease (--store kube)")
    p.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "kube-system"),
                   help="Lease namespace (default $POD_NAMESPACE or kube-system)")
    p.add_argument("--lease-name", default="dynamig-extender", help="Lease name (default dynamig-extender)")
    p.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig (default: in-cluster, else ~/.kube/config)")
    p.add_argument("--policy", default="dynamig", help="placement policy (default dynamig)")
    p.add_argument("--time-budget-ms", type=float, default=200.0, help="planner budget per filter (default 200)")
    p.add_argument("--layouts-any", action="store_true", help="allow every valid MIG layout, not only templates")
    p.add_argument("--max-concurrent-solves", type=int, default=4, help="parallel solves (default 4)")
    p.add_argument("--identity", help="this instance's identity (node-lock owner, Lease holder)")
    return p


def memory_store(inventory: str, pods: str | None) -> tuple[InMemoryStore, DeviceConfig, bool]:
    inv = load_inventory(inventory)
    store = InMemoryStore()
    for obj in node_objects(state_from_inventory(inv)):
        store.add_node(obj)
    if pods:
        for p in load_pod_manifests(pods):
            try:
                store.create_pod(p)
            except Conflict as e:
                raise ConfigError(str(e), pods) from None
    return store, inv.templates, inv.layouts_any


def build(args: argparse.Namespace) -> tuple[ClusterStore, ExtenderConfig, list[Any]]:
    """The store, the config and what must be stopped on exit (informers, elector)."""
    stoppables: list[Any] = []
    templates: DeviceConfig | None = None
    layouts_any = bool(args.layouts_any)
    if args.store == "memory":
        if not args.inventory:
            raise ConfigError("--store memory needs --inventory FILE")
        store: ClusterStore
        store, templates, inv_any = memory_store(args.inventory, args.pods)
        layouts_any = layouts_any or inv_any
        if args.leader_elect:
            raise ConfigError("--leader-elect needs --store kube")
    else:
        if args.pods or args.inventory:
            raise ConfigError("--inventory/--pods are for --store memory")
        from kube import KubeClient, KubeStore

        client = KubeClient.from_environment(args.kubeconfig)
        kstore = KubeStore(client).start()
        stoppables.append(kstore)
        if not kstore.wait_synced(60):
            log.warning("node/pod caches not synced after 60 s; serving anyway (readyz says so)")
        store = kstore
    if args.device_config:
        loaded = load_device_config(args.device_config)
        for w in loaded.warnings:
            print(str(w), file=sys.stderr)
        templates = loaded.config
        names = templates.resources
        if names.all != DEFAULT_RESOURCES.all:
            # filter, prioritize and the device plugin read these names; the admission webhook does
            # not yet (it would leave such pods on the default scheduler): refuse rather than half-work
            raise ConfigError(f"{args.device_config}: resource names {', '.join(names.all)} differ from HAMi's "
                              "defaults, which the admission webhook does not support yet; keep nvidia.com/gpu, "
                              "nvidia.com/gpumem, nvidia.com/gpumem-percentage and nvidia.com/gpucores")
    kw: dict[str, Any] = dict(
        scheduler_name=args.scheduler_name, layouts_any=layouts_any, policy=args.policy,
        time_budget_ms=args.time_budget_ms, max_concurrent_solves=args.max_concurrent_solves,
        legacy_metrics=args.legacy_metrics,
        hami_metrics=args.hami_metrics,
    )
    if templates is not None:
        kw["templates"] = templates
    if args.identity:
        kw["identity"] = args.identity
    if args.leader_elect:
        from kube import KubeClient, LeaderElector

        elector = LeaderElector(KubeClient.from_environment(args.kubeconfig), args.lease_namespace,
                                args.lease_name, args.identity)
        kw["identity"] = elector.identity
        kw["is_leader"] = lambda: elector.is_leader
        elector.start()
        stoppables.append(elector)
    return store, ExtenderConfig(**kw), stoppables


def run(args: argparse.Namespace) -> int:
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        print("dynamig extender: --tls-cert-file and --tls-key-file go together", file=sys.stderr)
        return 2
    for f in (args.tls_cert_file, args.tls_key_file):
        if f and not os.path.isfile(f):
            raise ConfigError("no such file", f)
    store, config, stoppables = build(args)
    app = create_app(store, config)
    try:
        serve(app, args.host, args.port, metrics_port=None if args.metrics_port < 0 else args.metrics_port,
              ssl_certfile=args.tls_cert_file, ssl_keyfile=args.tls_key_file)
    finally:
        for s in reversed(stoppables):
            s.stop()
    return 0
