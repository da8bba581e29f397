"""Bounded work per request (issue 15, finding 5): body size while streaming, JSON depth, GPU units
per container, containers per pod; every refusal is a 4xx (or the filter's reason) with text,
never a bare 500 or an "internal error: " without text."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from test_extender_support import fake_plan, filter_body, memory_store, pod_manifest

from extender import ExtenderConfig, ServerHandle, create_app, serve_in_thread
from extender.limits import depth_exceeds, pod_limit_problem


@pytest.fixture
def server() -> Iterator[ServerHandle]:
    cfg = ExtenderConfig(planner=fake_plan, planner_config=object(), max_body_bytes=1 << 20)
    with serve_in_thread(create_app(memory_store(), cfg)) as h:
        yield h


def _review(pod: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "namespace": "ml",
                        "operation": "CREATE", "userInfo": {"username": "alice"}, "object": pod}}


def test_declared_oversized_body_is_refused_before_it_is_sent(server: ServerHandle) -> None:
    # headers promise 50 MB, no byte of body follows: the answer must come anyway, at once
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 52428800\r\n\r\n")
        t0 = time.monotonic()
        got = b""
        while b"too large" not in got and time.monotonic() - t0 < 3:
            part = s.recv(4096)
            if not part:
                break
            got += part
    head = got.decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head
    assert "too large" in head and time.monotonic() - t0 < 3


def test_streamed_oversized_body_is_refused_without_reading_it_all(server: ServerHandle) -> None:
    # a chunked body (no Content-Length) of up to 100 MiB: the 413 arrives after about the limit (1 MiB)
    chunk = b" " * (256 << 10)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        answered = b""
        for _ in range(400):
            try:
                s.sendall(framed)
            except OSError:
                break  # the server answered and closed
            sent += len(chunk)
            if select.select([s], [], [], 0)[0]:
                answered = s.recv(4096)
                break
        if not answered:
            answered = s.recv(4096)
    assert answered.startswith(b"HTTP/1.1 413"), answered
    assert sent < 40 << 20, f"{sent >> 20} MiB sent before the refusal"


@pytest.mark.parametrize("depth", [80, 990, 100_000])
def test_deep_json_is_a_400(server: ServerHandle, depth: int) -> None:
    body = "[" * depth + "]" * depth
    doc = '{"Pod": {"metadata": {"name": "p"}, "spec": {"x": ' + body + "}}, \"NodeNames\": []}"
    for verb in ("filter", "prioritize", "bind", "webhook"):
        r = httpx.post(f"{server.url}/{verb}", content=doc, headers={"Content-Type": "application/json"}, timeout=20)
        assert r.status_code == 400, (verb, r.status_code, r.text)
        assert "nests JSON" in r.json()["Error"]


def test_units_per_container_limit(server: ServerHandle) -> None:
    pod = pod_manifest("greedy", gpu=str(2 ** 31), mem="1000")
    t0 = time.monotonic()
    doc = httpx.post(f"{server.url}/filter", json=filter_body(pod, ["mig-0", "share-0"]), timeout=20).json()
    assert time.monotonic() - t0 < 2
    assert doc["NodeNames"] == [] and doc["Error"] == ""
    for why in doc["FailedAndUnresolvableNodes"].values():
        assert "2147483648" in why and "at most 64" in why
    ans = httpx.post(f"{server.url}/webhook", json=_review(pod), timeout=20).json()["response"]
    assert ans["allowed"] is False and ans["status"]["code"] == 422
    assert "at most 64" in ans["status"]["message"]


def test_containers_per_pod_limit(server: ServerHandle) -> None:
    pod = pod_manifest("wide")
    pod["spec"]["containers"] = [{"name": f"c{i}", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
                                 for i in range(5000)]
    doc = httpx.post(f"{server.url}/filter", json=filter_body(pod, ["mig-0"]), timeout=20).json()
    assert "5000 containers" in doc["FailedAndUnresolvableNodes"]["mig-0"]
    scores = httpx.post(f"{server.url}/prioritize", json=filter_body(pod, ["mig-0"]), timeout=20).json()
    assert scores == [{"Host": "mig-0", "Score": 0}]
    ans = httpx.post(f"{server.url}/webhook", json=_review(pod), timeout=20).json()["response"]
    assert ans["allowed"] is False and "5000 containers" in ans["status"]["message"]


def test_internal_errors_always_carry_text() -> None:
    def broken(*_a: Any, **_k: Any) -> Any:
        raise MemoryError()

    cfg = ExtenderConfig(planner=broken, planner_config=object())
    with serve_in_thread(create_app(memory_store(), cfg)) as h:
        pod = pod_manifest("p", mem="1000")
        r = httpx.post(f"{h.url}/filter", json=filter_body(pod, ["mig-0"]), timeout=20)
    assert r.status_code == 200
    err = r.json()["Error"]
    assert err.startswith("dynamig: internal error: ") and err.endswith("MemoryError"), err


def test_limit_helpers() -> None:
    assert not depth_exceeds({"a": [{"b": 1}]}, 3)
    assert depth_exceeds({"a": [{"b": [1]}]}, 3)
    deep: Any = []
    for _ in range(50_000):  # no recursion: a deep structure is just a long loop
        deep = [deep]
    assert depth_exceeds(deep, 64)
    ok = pod_manifest("ok", gpu="64")
    assert pod_limit_problem(ok, 64, 64) is None
    assert "65" in (pod_limit_problem(pod_manifest("x", gpu="65"), 64, 64) or "")
    assert "1000" in (pod_limit_problem(pod_manifest("k", gpu="1k"), 64, 64) or "")
    assert pod_limit_problem(pod_manifest("junk", gpu="lots"), 64, 64) is None  # parse_pod names the error
    assert json.dumps(ok)
