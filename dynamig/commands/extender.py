"""``dynamig extender``: run the scheduler extender (filter, prioritize, bind, webhook, monitor) and
its metrics server.

Listeners: the kube-scheduler verbs (/filter, /prioritize, /bind) are unauthenticated, so they
listen on loopback only (--host, --port; kube-scheduler runs in the same pod). The webhook,
/healthz, /readyz and /monitor listen on the pod address (--serve-host, --serve-port; TLS with
--tls-cert-file/--tls-key-file), /metrics on --metrics-host (default: --serve-host) and
--metrics-port.

``--store kube`` (default) talks to the API server (in-cluster config, else the kubeconfig);
``--store memory`` serves an in-memory cluster: the nodes of ``--inventory`` (every device plugin
registered, GPUs idle) and the pods of ``--pods`` (existing allocations as their annotations).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from dataclasses import replace
from typing import Any

from dynamig.commands.kubeenv import kube_client
from extender import ExtenderConfig, create_apps
from extender import run as serve
from models.cluster import state_from_inventory
from models.config import load_device_config, load_inventory
from models.errors import ConfigError, Conflict
from models.resources import DEFAULT_RESOURCES
from models.signing import Keyring, load_keyring
from models.store import ClusterStore, InMemoryStore, node_objects
from models.templates import DeviceConfig
from models.yamlsrc import load_pod_manifests
from solver import POLICIES

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
    p.add_argument("--host", default="127.0.0.1",
                   help="address of the scheduler verbs /filter, /prioritize, /bind (default 127.0.0.1; must be "
                        "a loopback address: they are unauthenticated)")
    p.add_argument("--port", type=int, default=8888, help="port of the scheduler verbs (default 8888)")
    p.add_argument("--serve-host", default="0.0.0.0",
                   help="address of the webhook, /healthz, /readyz and /monitor (default 0.0.0.0: the pod IP)")
    p.add_argument("--serve-port", type=int, default=8443,
                   help="port of the webhook, probes and monitor (default 8443; TLS with --tls-cert-file)")
    p.add_argument("--metrics-host", default=None, help="address of /metrics (default: --serve-host)")
    p.add_argument("--metrics-port", type=int, default=9395, help="metrics port (default 9395; -1 disables)")
    p.add_argument("--reservation-ttl", type=float, default=180.0, metavar="S",
                   help="a reservation of a pod that is not bound expires S seconds after its last filter "
                        "(default 180; 0 never)")
    p.add_argument("--tls-cert-file", metavar="F",
                   help="serve the webhook listener over HTTPS with this certificate (needs --tls-key-file)")
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
    p.add_argument("--policy", default="dynamig", choices=POLICIES, help="placement policy (default dynamig)")
    p.add_argument("--time-budget-ms", type=float, default=200.0, help="planner budget per filter (default 200)")
    p.add_argument("--engine", default="auto", choices=("auto", "dp", "cpsat"),
                   help="single-pod solver: auto/dp (exact per-node decomposition) or cpsat (one CP-SAT model; "
                        "default auto)")
    p.add_argument("--lookahead", type=int, default=0, metavar="N",
                   help="plan up to N pending GPU pods together with CP-SAT in the background and answer filters "
                        "from that plan (default 0: off; see docs/decisions.md)")
    p.add_argument("--lookahead-budget-ms", type=float, default=1000.0, metavar="MS",
                   help="CP-SAT time per lookahead re-solve (default 1000)")
    p.add_argument("--layouts-any", action="store_true", help="allow every valid MIG layout, not only templates")
    p.add_argument("--max-concurrent-solves", type=int, default=4, help="parallel solves (default 4)")
    p.add_argument("--identity", help="this instance's identity (node-lock owner, Lease holder)")
    add_trust_arguments(p)
    return p


def add_trust_arguments(p: argparse.ArgumentParser) -> None:
    """The trust model's settings (docs/security.md)."""
    p.add_argument("--allocation-key-file", metavar="FILE", default=os.environ.get("DYNAMIG_ALLOCATION_KEY_FILE"),
                   help="key(s) that sign every reservation, one per line, the first signs (default "
                        "$DYNAMIG_ALLOCATION_KEY_FILE; required with --store kube)")
    p.add_argument("--trusted-user", metavar="USER", action="append", default=[],
                   help="exact user (system:serviceaccount:NS:NAME) allowed to change every dynamig.io/ pod "
                        "annotation: the extender's own service account (repeatable)")
    p.add_argument("--node-agent-user", metavar="USER", action="append", default=[],
                   help="exact user of the device plugin: may change only its pod keys, on its node's pods "
                        "(repeatable)")


def allocation_keys(args: argparse.Namespace) -> Keyring | None:
    """The keyring, required against a real cluster (an unsigned allocation is anyone's to forge)."""
    if args.allocation_key_file:
        return load_keyring(args.allocation_key_file)
    if args.store == "kube":
        raise ConfigError("--store kube needs --allocation-key-file FILE (or $DYNAMIG_ALLOCATION_KEY_FILE): "
                          "without it any pod could claim a GPU by writing dynamig.io/ annotations")
    return None


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
    keys = allocation_keys(args)
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
        from kube import KubeStore

        client = kube_client(args.kubeconfig)
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
        engine=args.engine, lookahead=args.lookahead, lookahead_budget_ms=args.lookahead_budget_ms,
        legacy_metrics=args.legacy_metrics, reservation_ttl_s=args.reservation_ttl,
        allocation_keys=keys, trusted_users=tuple(args.trusted_user),
        node_agent_users=tuple(args.node_agent_user), hami_metrics=args.hami_metrics,
    )
    if templates is not None:
        kw["templates"] = templates
    if args.identity:
        kw["identity"] = args.identity
    if args.leader_elect:
        from kube import LeaderElector

        elector = LeaderElector(kube_client(args.kubeconfig), args.lease_namespace,
                                args.lease_name, args.identity)
        kw["identity"] = elector.identity
        kw["is_leader"] = lambda: elector.is_leader
        elector.start()
        stoppables.append(elector)
    config = ExtenderConfig(**kw)
    if args.store == "memory":
        # the in-memory cluster lives in this process: no other extender can hold its node locks
        me = config.identity
        config = replace(config, holder_alive=lambda owner: owner == me)
    else:
        from kube.lease import PresenceLease

        pod = os.environ.get("POD_NAME")
        presence = PresenceLease(kube_client(args.kubeconfig), args.lease_namespace, config.identity,
                                 owner_pod=(args.lease_namespace, pod) if pod else None).start()
        stoppables.append(presence)
        config = replace(config, holder_alive=presence.is_alive)
    return store, config, stoppables


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_args(args: argparse.Namespace) -> str | None:
    """A usage error (exit 2 before anything starts), or None."""
    if not _loopback(args.host):
        return (f"--host {args.host}: the scheduler verbs (/filter, /bind) are unauthenticated and listen on "
                "loopback only (127.0.0.1 or ::1); the webhook, probes and monitor use --serve-host")
    for flag, port, off in (("--port", args.port, False), ("--serve-port", args.serve_port, False),
                            ("--metrics-port", args.metrics_port, True)):
        if not (0 <= port <= 65535 or (off and port == -1)):
            return f"{flag} {port}: not a TCP port (0..65535{', or -1 to disable' if off else ''})"
    if args.port == args.serve_port and args.port != 0:
        return f"--port and --serve-port are both {args.port}: the two listeners need their own ports"
    if not (args.reservation_ttl >= 0 and args.reservation_ttl < float("inf")):
        return f"--reservation-ttl {args.reservation_ttl}: must be a number of seconds >= 0"
    if not (args.time_budget_ms > 0 and args.time_budget_ms < float("inf")):
        return f"--time-budget-ms {args.time_budget_ms}: must be > 0"
    if args.lookahead < 0:
        return f"--lookahead {args.lookahead}: must be >= 0 (0 = off)"
    if not (args.lookahead_budget_ms > 0 and args.lookahead_budget_ms < float("inf")):
        return f"--lookahead-budget-ms {args.lookahead_budget_ms}: must be > 0"
    if args.max_concurrent_solves < 1:
        return f"--max-concurrent-solves {args.max_concurrent_solves}: must be >= 1"
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        return "--tls-cert-file and --tls-key-file go together"
    return None


def run(args: argparse.Namespace) -> int:
    usage = check_args(args)
    if usage is not None:
        print(f"dynamig extender: {usage}", file=sys.stderr)
        return 2
    for f in (args.tls_cert_file, args.tls_key_file):
        if f and not os.path.isfile(f):
            raise ConfigError("no such file", f)
    store, config, stoppables = build(args)
    apps = create_apps(store, config)
    try:
        serve(apps.scheduler, args.host, args.port, public=apps.public, public_host=args.serve_host,
              public_port=args.serve_port, metrics_host=args.metrics_host,
              metrics_port=None if args.metrics_port < 0 else args.metrics_port,
              ssl_certfile=args.tls_cert_file, ssl_keyfile=args.tls_key_file)
    finally:
        for s in reversed(stoppables):
            s.stop()
    return 0
