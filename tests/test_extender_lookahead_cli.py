"""``dynamig extender --store memory … --lookahead 64`` as a real process (issue 13, done-when): the
background batch loop solves the pending pods with CP-SAT, ``/metrics`` counts the solves, and a
filtered pod is answered from the batch plan. The services bind 0.0.0.0 and the test talks from
127.0.0.2 (never the bind address: a loopback-only socket would not serve a pod IP)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml
from test_extender_support import filter_body, pod_manifest

CLIENT = "127.0.0.2"
INVENTORY = """
nodes:
  - name: solo
    mode: mig
    gpus: {model: A100-SXM4-40GB, count: 1}
"""
PODS = [pod_manifest("a", mem="8000"), pod_manifest("b", mem="15000")]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("0.0.0.0", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}(\{{[^}}]*{re.escape(labels)}[^}}]*\}})? ([0-9.e+-]+)$", text, re.M)
    return float(m.group(2)) if m else 0.0


def batch_solves(text: str) -> float:
    return sum(float(v) for v in re.findall(r"^dynamig_batch_solves_total\{[^}]*\} ([0-9.e+-]+)$", text, re.M))


def test_cli_lookahead_solves_in_the_background_and_answers_a_filter(tmp_path: Path) -> None:
    inv, pods, key = tmp_path / "inv.yaml", tmp_path / "pods.yaml", tmp_path / "allocation.key"
    inv.write_text(INVENTORY)
    pods.write_text(yaml.safe_dump_all(PODS))
    key.write_text("k" * 64 + "\n")
    verbs, serve, metrics_port = free_ports(3)
    cli = str(Path(sys.executable).with_name("dynamig"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "KUBECONFIG"))}
    proc = subprocess.Popen(
        [cli, "extender", "--store", "memory", "--inventory", str(inv), "--pods", str(pods),
         "--lookahead", "64", "--lookahead-budget-ms", "2000", "--host", "127.0.0.1", "--port", str(verbs),
         "--serve-host", "0.0.0.0", "--serve-port", str(serve), "--metrics-host", "0.0.0.0",
         "--metrics-port", str(metrics_port), "--allocation-key-file", str(key)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    transport = httpx.HTTPTransport(local_address=CLIENT)
    try:
        with httpx.Client(transport=transport, timeout=10.0) as http:
            text, deadline = "", time.monotonic() + 90
            while time.monotonic() < deadline:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                try:
                    text = http.get(f"http://{CLIENT}:{metrics_port}/metrics").text
                    if batch_solves(text) > 0:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.3)
            assert batch_solves(text) > 0, text[-2000:]
            assert 'dynamig_batch_solves_total{status="optimal"}' in text or "feasible" in text
            assert metric(text, "dynamig_batch_plan_pods", 'state="placed"') == 2.0, text[-2000:]
            doc = http.post(f"http://127.0.0.1:{verbs}/filter", json=filter_body(PODS[0], ["solo"])).json()
            assert doc["NodeNames"] == ["solo"], doc
            text = http.get(f"http://{CLIENT}:{metrics_port}/metrics").text
            assert metric(text, "dynamig_filter_answers_total", 'source="batch"') >= 1.0, text[-2000:]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
