"""Loaders for the openb CSV files (solver.openb)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import OPENB, needs_openb
from hypothesis import given
from hypothesis import strategies as st

from solver.openb import (
    GPU_MEMORY_GIB,
    NODE_COLUMNS,
    POD_COLUMNS,
    POD_COLUMNS_SHORT,
    OpenbFormatError,
    OpenbNode,
    OpenbPod,
    gpu_memory_mib,
    load_nodes,
    load_pods,
    share_memory_mib,
)

DATA = OPENB
needs_data = needs_openb

NODE_HEADER = ",".join(NODE_COLUMNS)
POD_HEADER = ",".join(POD_COLUMNS)
POD_HEADER_SHORT = ",".join(POD_COLUMNS_SHORT)


def write(tmp_path: Path, name: str, *lines: str) -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


# ---------------------------------------------------------------------------------- nodes
def test_load_nodes_good_rows(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "nodes.csv",
        NODE_HEADER,
        "n-0,64000,262144,2,P100",
        "n-1,96000,393216,8,G2",
        "cpu-0,32000,131072,0,",
    )
    nodes = load_nodes(p)
    assert nodes == (
        OpenbNode("n-0", 64000, 262144, 2, "P100"),
        OpenbNode("n-1", 96000, 393216, 8, "G2"),
        OpenbNode("cpu-0", 32000, 131072, 0, ""),
    )
    with pytest.raises(AttributeError):
        nodes[0].gpus = 3  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("n-0,64000,262144,2", "expected 5 fields"),
        ("n-0,64k,262144,2,P100", "column cpu_milli: expected an integer"),
        ("n-0,64000,-1,2,P100", "column memory_mib: must be >= 0"),
        ("n-0,0,1,2,P100", "column cpu_milli: must be >= 1"),
        ("n-0,64000,262144,2,", "empty model for a node with 2 GPU(s)"),
        (",64000,262144,2,P100", "empty node name"),
    ],
)
def test_load_nodes_bad_row_names_file_and_line(tmp_path: Path, row: str, needle: str) -> None:
    p = write(tmp_path, "nodes.csv", NODE_HEADER, "ok-0,8000,100,1,T4", row)
    with pytest.raises(OpenbFormatError) as info:
        load_nodes(p)
    err = info.value
    assert err.line == 3
    assert str(err).startswith(f"{p}:3: ")
    assert needle in str(err)


def test_load_nodes_bad_header_duplicate_empty_missing(tmp_path: Path) -> None:
    with pytest.raises(OpenbFormatError, match=r":1: header lacks column\(s\) model"):
        load_nodes(write(tmp_path, "a.csv", "sn,cpu_milli,memory_mib,gpu", "n,1,1,1"))
    with pytest.raises(OpenbFormatError, match=r":3: duplicate node name 'n'"):
        load_nodes(write(tmp_path, "b.csv", NODE_HEADER, "n,1,1,1,T4", "n,1,1,1,T4"))
    with pytest.raises(OpenbFormatError, match="empty file"):
        load_nodes(write(tmp_path, "c.csv", ""))
    with pytest.raises(OpenbFormatError, match="no node rows"):
        load_nodes(write(tmp_path, "d.csv", NODE_HEADER))
    with pytest.raises(OpenbFormatError, match="cannot read file"):
        load_nodes(tmp_path / "missing.csv")


# ----------------------------------------------------------------------------------- pods
def test_load_pods_full_columns(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "pods.csv",
        POD_HEADER,
        "pod-0,12000,16384,1,1000,,LS,Running,0,12537496,0",
        "pod-1,6000,12288,1,460,V100M16|V100M32,BE,Pending,427061,12902960,",
        "pod-2,88000,327680,0,0,,LS,Failed,10,20,11",
    )
    pods = load_pods(p)
    assert pods[0] == OpenbPod("pod-0", 12000, 16384, 1, 1000, (), "LS", "Running", 0, 12537496, 0)
    assert pods[1].gpu_spec == ("V100M16", "V100M32")
    assert pods[1].scheduled_time is None
    assert pods[1].gpu_request_milli == 460
    assert pods[2].gpu_request_milli == 0


def test_load_pods_five_column_multigpu_format(tmp_path: Path) -> None:
    p = write(tmp_path, "multi.csv", POD_HEADER_SHORT, "pod-0,12000,16384,8,1000", "pod-1,3152,5600,1,810")
    pods = load_pods(p)
    assert pods[0] == OpenbPod("pod-0", 12000, 16384, 8, 1000)
    assert pods[0].gpu_spec == () and pods[0].qos is None and pods[0].creation_time is None
    assert pods[0].gpu_request_milli == 8000


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("pod-9,1,1,1", "expected 5 fields"),
        ("pod-9,1.5,1,1,500", "column cpu_milli: expected an integer, got '1.5'"),
        ("pod-9,1,1,-1,500", "column num_gpu: must be >= 0"),
        ("pod-9,1,1,2,500", "must ask for whole GPUs"),
        ("pod-0,1,1,1,500", "duplicate pod name 'pod-0'"),
    ],
)
def test_load_pods_bad_row_names_file_and_line(tmp_path: Path, row: str, needle: str) -> None:
    p = write(tmp_path, "pods.csv", POD_HEADER_SHORT, "pod-0,1000,1,0,0", row)
    with pytest.raises(OpenbFormatError) as info:
        load_pods(p)
    assert info.value.line == 3
    assert info.value.path == str(p)
    assert needle in str(info.value)


def test_load_pods_bad_time_column(tmp_path: Path) -> None:
    p = write(tmp_path, "pods.csv", POD_HEADER, "pod-0,1,1,0,0,,LS,Running,soon,1,1")
    with pytest.raises(OpenbFormatError, match=r":2: column creation_time: expected an integer"):
        load_pods(p)


def test_gpu_milli_clamped_in_request(tmp_path: Path) -> None:
    p = write(tmp_path, "pods.csv", POD_HEADER_SHORT, "a,1,1,1,1500", "b,1,1,1,0")
    a, b = load_pods(p)
    assert a.gpu_milli == 1500 and a.gpu_request_milli == 1000
    assert b.gpu_request_milli == 0


@given(
    st.lists(
        st.tuples(
            st.integers(0, 200_000),
            st.integers(0, 10**6),
            st.sampled_from([(0, 0), (1, 50), (1, 470), (1, 1000), (2, 1000), (8, 1000)]),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_load_pods_round_trip(rows: list[tuple[int, int, tuple[int, int]]]) -> None:
    import tempfile

    lines = [POD_HEADER_SHORT] + [f"p-{i},{c},{m},{n},{g}" for i, (c, m, (n, g)) in enumerate(rows)]
    with tempfile.TemporaryDirectory() as d:
        pods = load_pods(write(Path(d), "p.csv", *lines))
    assert [(p.cpu_milli, p.memory_mib, (p.num_gpu, p.gpu_milli)) for p in pods] == rows


# ---------------------------------------------------------------------------- GPU memory
def test_gpu_memory_per_model() -> None:
    assert GPU_MEMORY_GIB["T4"] == 16 and GPU_MEMORY_GIB["V100M16"] == 16
    assert GPU_MEMORY_GIB["V100M32"] == 32 and GPU_MEMORY_GIB["A10"] == 24 and GPU_MEMORY_GIB["P100"] == 16
    assert gpu_memory_mib("V100M32") == 32 * 1024
    assert gpu_memory_mib("G2") is None and gpu_memory_mib("G3") is None and gpu_memory_mib("nope") is None
    assert share_memory_mib("T4", 500) == 8192
    assert share_memory_mib("A10", 2000) == 24 * 1024  # clamped to one GPU
    assert share_memory_mib("G2", 500) is None


# ------------------------------------------------------------------------------ real data
@needs_data
def test_real_files_load() -> None:
    nodes = load_nodes(DATA / "openb_node_list_gpu_node.csv")
    assert len(nodes) == 1213
    assert sum(n.gpus for n in nodes) == 6212
    pods = load_pods(DATA / "openb_pod_list_default.csv")
    assert len(pods) == 8152
    assert sum(p.gpu_request_milli for p in pods) == 6_086_800
    multi = load_pods(DATA / "openb_pod_list_multigpu20.csv")
    assert multi[0].qos is None
    spec = load_pods(DATA / "openb_pod_list_gpuspec33.csv")
    assert sum(1 for p in spec if p.gpu_spec) == 2388
