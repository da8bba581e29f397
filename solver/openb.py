"""Loaders for the Alibaba cluster-trace-gpu-v2023 ("openb") CSV files.

The files are described in ``shared/data/openb/README.md``. Two kinds exist:

* node lists (``openb_node_list_*.csv``): ``sn,cpu_milli,memory_mib,gpu,model``;
* pod lists (``openb_pod_list_*.csv``): ``name,cpu_milli,memory_mib,num_gpu,gpu_milli`` followed, in
  all files except ``multigpuNN``, by ``gpu_spec,qos,pod_phase,creation_time,deletion_time,
  scheduled_time``.

Both loaders return tuples of frozen dataclasses and raise :class:`OpenbFormatError` (a
``ValueError``) naming the file and the 1-based line for any malformed row.

GPU shares. ``gpu_milli`` is the trace authors' unit of a GPU share: per the trace author
(alibaba/clusterdata issue #193) a pod asking for 600 milli-GPU gets 60 % of the GPU's **memory**
and at least 60 % of its **compute time**, so ``gpu_milli / 1000`` is both a memory and a compute
fraction of *one* GPU of the node's model. The trace carries no GPU memory; :data:`GPU_MEMORY_GIB`
gives the public memory size per model (T4 and V100M16 16 GiB, V100M32 32 GiB, A10 24 GiB, P100
16 GiB). ``G2`` and ``G3`` are undisclosed internal models: their memory is unknown (``None``), and
a share on them can only be expressed as a fraction.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "GPU_MEMORY_GIB",
    "MILLI_PER_GPU",
    "NODE_COLUMNS",
    "POD_COLUMNS",
    "POD_COLUMNS_SHORT",
    "OpenbFormatError",
    "OpenbNode",
    "OpenbPod",
    "gpu_memory_mib",
    "load_nodes",
    "load_pods",
    "share_memory_mib",
]

MILLI_PER_GPU = 1000
"""One whole GPU in the trace's milli-GPU unit."""

NODE_COLUMNS: tuple[str, ...] = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS_SHORT: tuple[str, ...] = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
POD_COLUMNS: tuple[str, ...] = (
    *POD_COLUMNS_SHORT,
    "gpu_spec",
    "qos",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)

GPU_MEMORY_GIB: Mapping[str, int | None] = MappingProxyType(
    {
        "T4": 16,
        "V100M16": 16,
        "V100M32": 32,
        "A10": 24,
        "P100": 16,
        "G2": None,  # undisclosed internal model
        "G3": None,  # undisclosed internal model
    }
)
"""GPU memory per trace model in GiB (public specs); ``None`` where the model is undisclosed."""


def gpu_memory_mib(model: str) -> int | None:
    """Memory of one GPU of ``model`` in MiB, or ``None`` when unknown (G2, G3, unlisted models)."""
    gib = GPU_MEMORY_GIB.get(model)
    return None if gib is None else gib * 1024


def share_memory_mib(model: str, gpu_milli: int) -> int | None:
    """GPU memory that a ``gpu_milli`` share of one ``model`` GPU stands for (rounded down), in MiB.

    ``None`` when the model's memory is unknown. ``gpu_milli`` is clamped to 0..1000 first.
    """
    total = gpu_memory_mib(model)
    if total is None:
        return None
    milli = min(max(gpu_milli, 0), MILLI_PER_GPU)
    return total * milli // MILLI_PER_GPU


class OpenbFormatError(ValueError):
    """A malformed openb CSV: ``str(err)`` is ``"<file>:<line>: <message>"``."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        super().__init__(f"{self.path}:{line}: {message}")


@dataclass(frozen=True, slots=True)
class OpenbNode:
    """One row of a node list."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int
    model: str  # "" for CPU-only nodes


@dataclass(frozen=True, slots=True)
class OpenbPod:
    """One row of a pod list. Time columns and ``qos``/``pod_phase`` are ``None`` when absent."""

    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int  # per-GPU share, as written in the file (not clamped)
    gpu_spec: tuple[str, ...] = ()  # allowed GPU models; empty = any
    qos: str | None = None
    pod_phase: str | None = None
    creation_time: int | None = None
    deletion_time: int | None = None
    scheduled_time: int | None = None

    @property
    def gpu_request_milli(self) -> int:
        """Total GPU demand ``num_gpu × gpu_milli`` with the per-GPU value clamped to 0..1000,
        as the trace's YAML converter writes it."""
        if self.num_gpu <= 0:
            return 0
        return self.num_gpu * min(max(self.gpu_milli, 0), MILLI_PER_GPU)


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) for every non-blank line of a CSV file."""
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise OpenbFormatError(path, 0, f"cannot read file: {exc.strerror or exc}") from exc
    with handle:
        reader = csv.reader(handle)
        try:
            for fields in reader:
                if not fields or all(not f.strip() for f in fields):
                    continue
                yield reader.line_num, fields
        except (csv.Error, UnicodeDecodeError) as exc:
            raise OpenbFormatError(path, reader.line_num, f"not a valid CSV file: {exc}") from exc


def _header(path: Path, rows: Iterator[tuple[int, list[str]]], required: Sequence[str]) -> dict[str, int]:
    try:
        line, fields = next(rows)
    except StopIteration:
        raise OpenbFormatError(path, 1, "empty file (expected a header line)") from None
    names = [f.strip() for f in fields]
    missing = [c for c in required if c not in names]
    if missing:
        raise OpenbFormatError(
            path, line, f"header lacks column(s) {', '.join(missing)} (expected {','.join(required)})"
        )
    return {name: i for i, name in enumerate(names)}


def _int(path: Path, line: int, column: str, text: str, *, minimum: int = 0) -> int:
    value = text.strip()
    try:
        number = int(value)
    except ValueError:
        raise OpenbFormatError(path, line, f"column {column}: expected an integer, got {text!r}") from None
    if number < minimum:
        raise OpenbFormatError(path, line, f"column {column}: must be >= {minimum}, got {number}")
    return number


def _opt_int(path: Path, line: int, column: str, text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    return _int(path, line, column, text)


def _field(fields: list[str], index: dict[str, int], column: str) -> str | None:
    i = index.get(column)
    if i is None:
        return None
    return fields[i]


def _named_rows(p: Path, rows: Iterator[tuple[int, list[str]]], width: int, name_col: int,
                what: str, column: str) -> Iterator[tuple[int, list[str], str]]:
    """Rows with the right width and a unique, non-empty name in column ``name_col``."""
    seen: set[str] = set()
    for line, fields in rows:
        if len(fields) != width:
            raise OpenbFormatError(p, line, f"expected {width} fields, got {len(fields)}")
        name = fields[name_col].strip()
        if not name:
            raise OpenbFormatError(p, line, f"column {column}: empty {what} name")
        if name in seen:
            raise OpenbFormatError(p, line, f"duplicate {what} name {name!r}")
        seen.add(name)
        yield line, fields, name


def load_nodes(path: str | Path) -> tuple[OpenbNode, ...]:
    """Load a node list (``sn,cpu_milli,memory_mib,gpu,model``)."""
    p = Path(path)
    rows = _rows(p)
    index = _header(p, rows, NODE_COLUMNS)
    nodes: list[OpenbNode] = []
    for line, fields, name in _named_rows(p, rows, len(index), index["sn"], "node", "sn"):
        cpu = _int(p, line, "cpu_milli", fields[index["cpu_milli"]], minimum=1)
        mem = _int(p, line, "memory_mib", fields[index["memory_mib"]])
        gpus = _int(p, line, "gpu", fields[index["gpu"]])
        model = fields[index["model"]].strip()
        if gpus > 0 and not model:
            raise OpenbFormatError(p, line, f"column model: empty model for a node with {gpus} GPU(s)")
        nodes.append(OpenbNode(name=name, cpu_milli=cpu, memory_mib=mem, gpus=gpus, model=model))
    if not nodes:
        raise OpenbFormatError(p, 2, "no node rows")
    return tuple(nodes)


def load_pods(path: str | Path) -> tuple[OpenbPod, ...]:
    """Load a pod list: the 11-column files, or the 5-column ``multigpuNN`` files."""
    p = Path(path)
    rows = _rows(p)
    index = _header(p, rows, POD_COLUMNS_SHORT)
    width = len(index)
    pods: list[OpenbPod] = []
    for line, fields, name in _named_rows(p, rows, width, index["name"], "pod", "name"):
        cpu = _int(p, line, "cpu_milli", fields[index["cpu_milli"]])
        mem = _int(p, line, "memory_mib", fields[index["memory_mib"]])
        num_gpu = _int(p, line, "num_gpu", fields[index["num_gpu"]])
        gpu_milli = _int(p, line, "gpu_milli", fields[index["gpu_milli"]])
        if num_gpu > 1 and gpu_milli < MILLI_PER_GPU:
            raise OpenbFormatError(
                p, line, f"a pod with num_gpu={num_gpu} must ask for whole GPUs (gpu_milli=1000), got {gpu_milli}"
            )
        spec_text = _field(fields, index, "gpu_spec") or ""
        spec = tuple(s.strip() for s in spec_text.split("|") if s.strip())
        qos = _field(fields, index, "qos")
        phase = _field(fields, index, "pod_phase")
        pods.append(
            OpenbPod(
                name=name,
                cpu_milli=cpu,
                memory_mib=mem,
                num_gpu=num_gpu,
                gpu_milli=gpu_milli,
                gpu_spec=spec,
                qos=(qos.strip() or None) if qos is not None else None,
                pod_phase=(phase.strip() or None) if phase is not None else None,
                creation_time=_opt_int(p, line, "creation_time", _field(fields, index, "creation_time")),
                deletion_time=_opt_int(p, line, "deletion_time", _field(fields, index, "deletion_time")),
                scheduled_time=_opt_int(p, line, "scheduled_time", _field(fields, index, "scheduled_time")),
            )
        )
    if not pods:
        raise OpenbFormatError(p, 2, "no pod rows")
    return tuple(pods)
