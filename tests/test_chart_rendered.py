"""Run what the chart renders (issue 15, findings 1 and 4).

`helm template` renders the chart; the extender container's exact command, args, env and ports
run as a local process against the fake API server (tests/fakes: the real REST paths), with the
container's volume mounts mapped to local folders holding the rendered ConfigMap and Secret.
127.0.0.2 stands in for the pod IP (a socket bound to 127.0.0.1 does not serve it). Checked:
every probe of the container, every Service targetPort that selects the scheduler pod, the
webhook through the path and port its MutatingWebhookConfiguration names, /metrics, and that
the scheduler verbs answer on loopback (kube-scheduler's urlPrefix) but not on the pod IP.

Only the extender container is run: the device plugin's container needs NVML and the kubelet
(its own tests run it with the simulated backend).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fakes.apiserver import FakeApiServer
from test_chart import CHART, FULLNAME, NAMESPACE, RELEASE
from test_extender_support import cluster, filter_body, pod_manifest

from models.store import node_objects

POD_IP = "127.0.0.2"

INVENTORY = """
nodes:
  - name: gpu-0
    mode: mig
    gpus: {model: A100-SXM4-40GB, count: 1}
"""


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    serve, sched, metrics = _free_ports(3)
    return {"port": serve, "schedulerPort": sched, "metricsPort": metrics}


@pytest.fixture(scope="module")
def docs(helm: str, ports: dict[str, int]) -> list[dict[str, Any]]:
    cmd = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", "1.33.5"]
    for k, v in ports.items():
        cmd += ["--set", f"scheduler.extender.{k}={v}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _env(container: dict[str, Any], fields: dict[str, str]) -> dict[str, str]:
    """The container's env as the kubelet would set it (fieldRefs resolved for our fake pod)."""
    out: dict[str, str] = {}
    for e in container.get("env") or []:
        if "value" in e:
            out[e["name"]] = str(e["value"])
        elif "fieldRef" in (e.get("valueFrom") or {}):
            out[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:  # pragma: no cover - a new kind of env source: make the test say so
            raise AssertionError(f"env {e['name']}: unsupported source {e}")
    return out


def _mount_volumes(pod: dict[str, Any], container: dict[str, Any], docs: list[dict[str, Any]],
                   root: Path) -> dict[str, Path]:
    """mountPath -> a local folder with the volume's rendered content (ConfigMap, Secret, emptyDir)."""
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    out: dict[str, Path] = {}
    for m in container["volumeMounts"]:
        vol = volumes[m["name"]]
        d = root / m["name"]
        d.mkdir(parents=True, exist_ok=True)
        if "configMap" in vol:
            for k, v in _one(docs, "ConfigMap", vol["configMap"]["name"])["data"].items():
                (d / k).write_text(v)
        elif "secret" in vol:
            for k, v in _one(docs, "Secret", vol["secret"]["secretName"])["data"].items():
                (d / k).write_bytes(base64.b64decode(v))
        else:
            assert "emptyDir" in vol, vol
        out[m["mountPath"]] = d
    return out


def _local_args(args: list[str], mounts: dict[str, Path]) -> list[str]:
    """The container's command with paths under its mounts pointed at the local folders."""
    out = []
    for a in args:
        for mp in sorted(mounts, key=len, reverse=True):  # the deepest mount holding the path
            if a == mp or a.startswith(mp.rstrip("/") + "/"):
                a = str(mounts[mp]) + a[len(mp.rstrip("/")):]
                break
        out.append(a)
    return out


@pytest.fixture(scope="module")
def running(docs: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    pod = _one(docs, "Deployment", f"{FULLNAME}-scheduler")["spec"]["template"]
    (ext,) = [c for c in pod["spec"]["containers"] if c["name"] == "extender"]
    root = tmp_path_factory.mktemp("extender-pod")
    mounts = _mount_volumes(pod, ext, docs, root)
    api = FakeApiServer()
    api.start()
    for n in node_objects(cluster(INVENTORY)):
        api.add_node(n)
    kubeconfig = root / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
        "users": [{"name": "fake", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}))
    command = _local_args(list(ext["command"]) + list(ext.get("args") or []), mounts)
    assert command[0] == "dynamig"
    command[0] = str(Path(sys.executable).with_name("dynamig"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(_env(ext, {"metadata.name": f"{FULLNAME}-scheduler-abc12", "metadata.namespace": NAMESPACE,
                          "spec.nodeName": "control-0"}))
    env["KUBECONFIG"] = str(kubeconfig)  # stands in for the service-account token of the pod
    env["HOME"] = str(root)
    log = (root / "extender.log").open("w")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    ports = {p["name"]: p["containerPort"] for p in ext["ports"]}
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (root / "extender.log").read_text()
            try:
                httpx.get(f"https://{POD_IP}:{ports['https']}/healthz", verify=False, timeout=1)
                httpx.get(f"http://{POD_IP}:{ports['metrics']}/metrics", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (root / "extender.log").read_text()
                time.sleep(0.2)
        yield {"pod": pod, "container": ext, "api": api, "ports": ports, "log": root / "extender.log",
               "docs": docs}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
        log.close()
        api.stop()


def _get(scheme: str, port: int | str, path: str, host: str = POD_IP) -> httpx.Response:
    return httpx.get(f"{scheme.lower()}://{host}:{port}{path}", verify=False, timeout=10)


def test_every_probe_answers_on_the_pod_ip(running: dict[str, Any]) -> None:
    ext = running["container"]
    probes = [ext[k]["httpGet"] for k in ("livenessProbe", "readinessProbe", "startupProbe") if k in ext]
    assert len(probes) >= 2
    for probe in probes:
        port = probe["port"] if isinstance(probe["port"], int) else running["ports"][probe["port"]]
        deadline = time.monotonic() + 20
        while True:  # readyz waits for the informers' first sync
            r = _get(probe.get("scheme", "HTTP"), port, probe["path"])
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 200, (probe, r.text)


def _admission_review(pod: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "rev-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": "ml", "operation": "CREATE", "userInfo": {"username": "alice"},
                        "object": pod}}


def test_services_and_webhook_reach_the_container(running: dict[str, Any]) -> None:
    docs, ports = running["docs"], running["ports"]
    labels = running["pod"]["metadata"]["labels"]
    services = [s for s in docs if s["kind"] == "Service"
                and all(labels.get(k) == v for k, v in s["spec"]["selector"].items())]
    assert {s["metadata"]["name"] for s in services} == {f"{FULLNAME}-extender", f"{FULLNAME}-metrics"}
    target: dict[tuple[str, int], int] = {}
    for svc in services:
        for p in svc["spec"]["ports"]:
            tp = p["targetPort"]
            assert isinstance(tp, int) or tp in ports, f"{svc['metadata']['name']}: targetPort {tp} names no port"
            target[(svc["metadata"]["name"], p["port"])] = tp if isinstance(tp, int) else ports[tp]
    # the metrics Service
    (mport,) = [v for (name, _), v in target.items() if "metrics" in name]
    r = _get("HTTP", mport, "/metrics")
    assert r.status_code == 200 and "dynamig_" in r.text
    # the webhook, through the Service and port its configuration names
    (hook,) = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    (wh,) = hook["webhooks"]
    svc_ref = wh["clientConfig"]["service"]
    cport = target[(svc_ref["name"], svc_ref["port"])]
    pod = pod_manifest("trainer", ns="ml", mem="4000")
    r = httpx.post(f"https://{POD_IP}:{cport}{svc_ref['path']}", json=_admission_review(pod), verify=False,
                   timeout=10)
    assert r.status_code == 200, r.text
    resp = r.json()["response"]
    assert resp["uid"] == "rev-1" and resp["allowed"] is True
    patch = json.loads(base64.b64decode(resp["patch"]))
    assert any(op["path"] == "/spec/schedulerName" for op in patch), patch


def test_scheduler_verbs_only_on_loopback(running: dict[str, Any]) -> None:
    docs = running["docs"]
    cfg = yaml.safe_load(_one(docs, "ConfigMap", f"{FULLNAME}-scheduler-config")["data"]["config.yaml"])
    (ext_cfg,) = cfg["extenders"]
    url = ext_cfg["urlPrefix"]
    assert url.startswith("http://127.0.0.1:")
    api: FakeApiServer = running["api"]
    pod = api.create_pod(pod_manifest("trainer", ns="ml", mem="4000"))
    deadline = time.monotonic() + 20
    while True:  # the informer must have seen the pod before the filter reserves it
        doc = httpx.post(f"{url}/{ext_cfg['filterVerb']}", json=filter_body(pod, ["gpu-0"]), timeout=30).json()
        if doc["NodeNames"] == ["gpu-0"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert doc["NodeNames"] == ["gpu-0"], doc
    sched_port = int(url.rsplit(":", 1)[1])
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://{POD_IP}:{sched_port}/filter", json=filter_body(pod, ["gpu-0"]), timeout=5)
    for name, port in running["ports"].items():
        scheme = "https" if name == "https" else "http"
        for verb in ("filter", "prioritize", "bind", "extender/filter", "extender/bind"):
            r = httpx.post(f"{scheme}://{POD_IP}:{port}/{verb}", json=filter_body(pod, ["gpu-0"]), verify=False,
                           timeout=5)
            assert r.status_code in (404, 405), (name, verb, r.status_code, r.text)
