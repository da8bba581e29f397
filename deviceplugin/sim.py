"""A simulated NVML: MIG state per GPU, with the real placement rules and NVML's behaviours.

The state lives in a JSON file (path in ``DYNAMIG_SIM_STATE``) guarded by an ``flock`` on
``<file>.lock``, so the device plugin process and the simulated ``nvidia-mig-parted`` executable
(a separate process) see and change the same GPUs. Writes are atomic (write + rename), so a reader
never sees a half-written file.

Modelled NVML behaviours (``reference/mig.md`` §6):

- creating a GPU instance without a placement auto-places it, and the order matters: single-compute-
  slice profiles and 3g go to the *highest* free legal start, the others to the *lowest* (creating
  1g,1g,2g,3g on an A100 fails with Insufficient Resources while 3g,1g,2g,1g succeeds);
- asking for an occupied placement returns ``INSUFFICIENT_RESOURCES`` (not ``ALREADY_EXISTS``);
- destroying an instance that runs a process, or changing MIG mode on a busy GPU, returns ``IN_USE``;
- a GPU instance and its compute instance are made and destroyed by separate calls (the ``nvml``
  applier's :class:`~deviceplugin.backend.MigOps`): a GPU instance without a compute instance is not
  a MIG device (NVML lists no MIG handle for it), and destroying a GPU instance that still has its
  compute instance returns ``IN_USE``. ``nvidia-mig-parted`` (simulated) makes and destroys both at once.

Faults for tests and the demo: ``faults.migparted_fail`` / ``migparted_hang`` (the simulated
mig-parted) and ``faults.nvml``, a queue of ``[call, code]`` that fail the next matching MigOps call.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from models.catalog import GpuModel, MigProfile, match_nvml_name, model
from models.config import Inventory
from models.layouts import Slot, is_valid
from models.types import NodeMode, gpu_uuid, mig_uuid

from .backend import (
    NVML_ERROR_IN_USE,
    NVML_ERROR_INSUFFICIENT_RESOURCES,
    NVML_ERROR_INVALID_ARGUMENT,
    NVML_ERROR_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    GiProfile,
    GiRecord,
    GpuBackendError,
    GpuInfo,
    GpuProcess,
    MigDevice,
    NvmlCallError,
)

ENV_STATE = "DYNAMIG_SIM_STATE"
STATE_VERSION = 1
SIM_DRIVER_VERSION = "550.127.05"

# PCI device+vendor ids (mig-parted's device-filter form); unknown models get a generic id.
_PCI_IDS = {
    "A30": "0x20B710DE",
    "A100-SXM4-40GB": "0x20B010DE",
    "A100-SXM4-80GB": "0x20B210DE",
    "H100-80GB": "0x233010DE",
    "H100-94GB": "0x232110DE",
    "H200": "0x233510DE",
    "GH200": "0x234210DE",
    "H20": "0x232910DE",
    "B200": "0x290110DE",
    "GB200": "0x294110DE",
    "RTX-PRO-6000": "0x2BB510DE",
}


def nvml_name(m: GpuModel) -> str:
    """An NVML device name that the catalog maps back to ``m`` (falls back to the first pattern)."""
    for p in m.nvml_patterns:
        name = p if p.startswith("NVIDIA") else f"NVIDIA {p}"
        if match_nvml_name(name) is m:
            return name
    p = m.nvml_patterns[0] if m.nvml_patterns else m.name
    return p if p.startswith("NVIDIA") else f"NVIDIA {p}"


def _high_first(p: MigProfile) -> bool:
    return p.compute_slices == 1 or p.klass == "3g"


# --------------------------------------------------------------------------- the in-memory model


@dataclass
class SimState:
    """The whole simulated node: a JSON-able dict with NVML-like operations. Not thread-safe by
    itself; :class:`SimBackend` serialises access with a file lock."""

    doc: dict[str, Any]

    # ---- reading
    @property
    def gpus(self) -> list[dict[str, Any]]:
        gpus: list[dict[str, Any]] = self.doc["gpus"]
        return gpus

    @property
    def faults(self) -> dict[str, Any]:
        faults: dict[str, Any] = self.doc.setdefault("faults", {})
        return faults

    def gpu(self, index: int) -> dict[str, Any]:
        for g in self.gpus:
            if g["index"] == index:
                return g
        raise NvmlCallError(NVML_ERROR_NOT_FOUND, f"no GPU with index {index}")

    def gpu_model(self, index: int) -> GpuModel:
        return model(self.gpu(index)["model"])

    def info(self, index: int) -> GpuInfo:
        g = self.gpu(index)
        m = model(g["model"])
        insts = []
        for x in sorted(g["instances"], key=lambda x: (x["start"], x["gi_id"])):
            if x.get("ci_id", 0) is None:
                continue  # a GPU instance without its compute instance: no MIG device
            p = m.profile(x["profile"])
            insts.append(MigDevice(x["uuid"], x["profile"], x["start"], p.memory_slices, x["gi_id"], x.get("ci_id", 0),
                                   p.memory_mib))
        procs = tuple(GpuProcess(p["pid"], p.get("used_memory_mib", 0), p.get("mig_uuid")) for p in g["processes"])
        return GpuInfo(
            index=g["index"], uuid=g["uuid"], name=g["name"], memory_mib=g["memory_mib"],
            pci_device_id=g.get("pci_device_id", "0x000010DE"), mig_capable=m.mig_capable,
            mig_enabled=bool(g["mig_enabled"]), mig_pending=None, health=bool(g.get("health", True)),
            instances=tuple(insts), processes=procs,
        )

    def infos(self) -> tuple[GpuInfo, ...]:
        return tuple(self.info(g["index"]) for g in sorted(self.gpus, key=lambda g: g["index"]))

    def layout(self, index: int) -> list[Slot]:
        return [Slot(x["profile"], x["start"]) for x in self.gpu(index)["instances"]]

    # ---- NVML-like mutations
    def set_mig_mode(self, index: int, enabled: bool) -> None:
        g = self.gpu(index)
        if not self.gpu_model(index).mig_capable:
            raise NvmlCallError(NVML_ERROR_NOT_SUPPORTED, f"GPU {index} is not MIG-capable")
        if bool(g["mig_enabled"]) == enabled:
            return
        if g["processes"]:
            raise NvmlCallError(NVML_ERROR_IN_USE, f"GPU {index} runs {len(g['processes'])} process(es)")
        if g["instances"]:
            raise NvmlCallError(NVML_ERROR_IN_USE, f"GPU {index} still has GPU instances")
        g["mig_enabled"] = enabled

    def gi_records(self, index: int) -> tuple[GiRecord, ...]:
        m = self.gpu_model(index)
        return tuple(
            GiRecord(x["gi_id"], x["profile"], x["start"], m.profile(x["profile"]).memory_slices,
                     () if x.get("ci_id", 0) is None else (int(x.get("ci_id", 0)),))
            for x in sorted(self.gpu(index)["instances"], key=lambda x: x["gi_id"]))

    def take_nvml_fault(self, call: str) -> None:
        """Fail this MigOps call if the next queued ``faults.nvml`` entry names it."""
        queue = self.faults.get("nvml") or []
        if queue and queue[0][0] == call:
            _, code = queue.pop(0)
            self.faults["nvml"] = queue
            raise NvmlCallError(int(code), f"injected fault in {call}")

    def _instance(self, index: int, gi_id: int) -> dict[str, Any]:
        found: list[dict[str, Any]] = [x for x in self.gpu(index)["instances"] if x["gi_id"] == gi_id]
        if not found:
            raise NvmlCallError(NVML_ERROR_NOT_FOUND, f"no GPU instance {gi_id} on GPU {index}")
        return found[0]

    def create_compute_instance(self, index: int, gi_id: int) -> int:
        x = self._instance(index, gi_id)
        if x.get("ci_id", 0) is not None:
            raise NvmlCallError(NVML_ERROR_INSUFFICIENT_RESOURCES, f"GPU instance {gi_id} already has its compute "
                                                                   "instance")
        x["ci_id"] = 0
        return 0

    def destroy_compute_instance(self, index: int, gi_id: int, ci_id: int) -> None:
        g = self.gpu(index)
        x = self._instance(index, gi_id)
        if x.get("ci_id", 0) != ci_id:
            raise NvmlCallError(NVML_ERROR_NOT_FOUND, f"no compute instance {ci_id} in GPU instance {gi_id}")
        busy = [p["pid"] for p in g["processes"] if p.get("mig_uuid") == x["uuid"]]
        if busy:
            raise NvmlCallError(NVML_ERROR_IN_USE, f"{x['profile']}@{x['start']} runs pid(s) {busy}")
        x["ci_id"] = None

    def create_gpu_instance(self, index: int, profile: str, start: int | None = None,
                            with_ci: bool = True) -> dict[str, Any]:
        """``nvmlDeviceCreateGpuInstance`` (start None: NVML auto-placement) or ``...WithPlacement``;
        ``with_ci``: also its compute instance (as mig-parted does)."""
        g = self.gpu(index)
        m = self.gpu_model(index)
        if not g["mig_enabled"]:
            raise NvmlCallError(NVML_ERROR_NOT_SUPPORTED, f"MIG mode is disabled on GPU {index}")
        if not m.has_profile(profile):
            raise NvmlCallError(NVML_ERROR_NOT_SUPPORTED, f"{m.name} has no GPU instance profile {profile}")
        p = m.profile(profile)
        current = self.layout(index)
        if start is not None:
            if start not in p.starts:
                raise NvmlCallError(NVML_ERROR_INVALID_ARGUMENT, f"{profile} cannot start at {start}")
            candidates: Sequence[int] = (start,)
        else:
            candidates = sorted(p.starts, reverse=_high_first(p))
        for s in candidates:
            if is_valid(m, [*current, Slot(profile, s)]):
                return self._add_instance(g, profile, s, with_ci)
        raise NvmlCallError(NVML_ERROR_INSUFFICIENT_RESOURCES,
                            f"no free placement for {profile} on GPU {index} (layout {sorted(map(str, current))})")

    def _add_instance(self, g: dict[str, Any], profile: str, start: int, with_ci: bool = True) -> dict[str, Any]:
        g["generation"] = int(g.get("generation", 0)) + 1
        gi_id = int(g.get("next_gi_id", 1))
        g["next_gi_id"] = gi_id + 1
        inst = {"gi_id": gi_id, "ci_id": 0 if with_ci else None, "profile": profile, "start": start,
                "uuid": mig_uuid(g["uuid"], Slot(profile, start), g["generation"])}
        g["instances"].append(inst)
        return inst

    def destroy_gpu_instance(self, index: int, gi_id: int, with_cis: bool = True) -> None:
        """``with_cis``: its compute instance too (mig-parted's clear); else one left is ``IN_USE``."""
        g = self.gpu(index)
        for x in g["instances"]:
            if x["gi_id"] == gi_id:
                if not with_cis and x.get("ci_id", 0) is not None:
                    raise NvmlCallError(NVML_ERROR_IN_USE, f"GPU instance {gi_id} still has a compute instance")
                busy = [p["pid"] for p in g["processes"] if p.get("mig_uuid") == x["uuid"]]
                if busy:
                    raise NvmlCallError(NVML_ERROR_IN_USE, f"{x['profile']}@{x['start']} runs pid(s) {busy}")
                g["instances"].remove(x)
                return
        raise NvmlCallError(NVML_ERROR_NOT_FOUND, f"no GPU instance {gi_id} on GPU {index}")

    def clear(self, index: int) -> None:
        """Destroy every GPU instance in id order; stops at the first one in use (NVML does not roll back)."""
        for x in sorted(self.gpu(index)["instances"], key=lambda x: x["gi_id"]):
            self.destroy_gpu_instance(index, x["gi_id"])

    # ---- test and demo helpers
    def add_process(self, index: int, pid: int, mig_uuid: str | None = None, used_memory_mib: int = 0) -> None:
        g = self.gpu(index)
        if mig_uuid is not None and not any(x["uuid"] == mig_uuid for x in g["instances"]):
            raise NvmlCallError(NVML_ERROR_NOT_FOUND, f"no MIG device {mig_uuid} on GPU {index}")
        g["processes"].append({"pid": pid, "mig_uuid": mig_uuid, "used_memory_mib": used_memory_mib})

    def remove_process(self, pid: int) -> None:
        for g in self.gpus:
            g["processes"] = [p for p in g["processes"] if p["pid"] != pid]


def new_state(node: str, gpus: Sequence[tuple[str, int]], mode: NodeMode, driver: str = SIM_DRIVER_VERSION) -> SimState:
    """A fresh node: MIG GPUs on ``mig`` nodes start MIG-enabled and empty (as
    ``models.cluster.state_from_inventory`` assumes); everything else starts with MIG disabled."""
    out = []
    index = 0
    for model_name, count in gpus:
        m = model(model_name)
        for _ in range(count):
            out.append({
                "index": index, "uuid": gpu_uuid(node, index), "model": m.name, "name": nvml_name(m),
                "memory_mib": m.memory_mib, "pci_device_id": _PCI_IDS.get(m.name, "0x000010DE"),
                "mig_enabled": bool(mode is NodeMode.MIG and m.mig_capable), "health": True,
                "instances": [], "processes": [], "next_gi_id": 1, "generation": 0,
            })
            index += 1
    return SimState({"v": STATE_VERSION, "node": node, "driver": driver, "gpus": out, "faults": {}})


# --------------------------------------------------------------------------- the file-backed backend

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(path: str) -> threading.Lock:
    with _thread_locks_guard:
        return _thread_locks.setdefault(os.path.abspath(path), threading.Lock())


class SimBackend:
    """:class:`~deviceplugin.backend.GpuBackend` over a simulator state file."""

    kind = "sim"

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        if not os.path.exists(self.path):
            raise GpuBackendError(f"simulated GPU state {self.path} does not exist")

    # ---- construction
    @classmethod
    def create(cls, path: str, node: str, gpus: Sequence[tuple[str, int]], mode: NodeMode,
               reset: bool = False) -> SimBackend:
        """Open ``path``, writing a fresh state for ``node`` first if it is absent (or ``reset``)."""
        path = os.path.abspath(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with _locked(path):
            if reset or not os.path.exists(path):
                _write(path, new_state(node, gpus, mode).doc)
        return cls(path)

    @classmethod
    def from_inventory(cls, path: str, inventory: Inventory, node: str, reset: bool = False) -> SimBackend:
        for n in inventory.nodes:
            if n.name == node:
                return cls.create(path, node, n.gpus, n.mode, reset)
        known = ", ".join(n.name for n in inventory.nodes)
        raise GpuBackendError(f"node {node!r} is not in inventory {inventory.source or ''} (nodes: {known})")

    # ---- state access
    def read(self) -> SimState:
        """A private copy of the current state (writes are atomic renames, so no lock is needed)."""
        return SimState(_read(self.path))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SimState]:
        """Exclusive read-modify-write. The state is written back even when the body raises:
        like real hardware, whatever happened before an error stays done."""
        with _locked(self.path):
            text = _read_text(self.path)
            state = SimState(_parse(self.path, text))
            try:
                yield state
            finally:
                new = _encode(state.doc)
                if new != text:  # a read-only transaction (or a no-op change) leaves the file alone
                    _write_text(self.path, new)

    # ---- GpuBackend
    def driver_version(self) -> str:
        return str(self.read().doc.get("driver", SIM_DRIVER_VERSION))

    def gpus(self) -> tuple[GpuInfo, ...]:
        return self.read().infos()

    def gi_profiles(self, index: int) -> tuple[GiProfile, ...]:
        m = self.read().gpu_model(index)
        return tuple(
            GiProfile(p.name, p.gi_profile_id, p.compute_slices, p.memory_mib, p.max_count,
                      tuple((s, p.memory_slices) for s in p.starts))
            for p in m.profiles
        )

    def migparted_env(self) -> dict[str, str]:
        return {ENV_STATE: self.path}

    def close(self) -> None:
        pass

    # ---- helpers for tests and the demo
    def add_process(self, index: int, pid: int, mig_uuid: str | None = None, used_memory_mib: int = 0) -> None:
        with self.transaction() as st:
            st.add_process(index, pid, mig_uuid, used_memory_mib)

    def remove_process(self, pid: int) -> None:
        with self.transaction() as st:
            st.remove_process(pid)

    def set_health(self, index: int, healthy: bool) -> None:
        with self.transaction() as st:
            st.gpu(index)["health"] = healthy

    # ---- MigOps (the nvml applier's per-instance calls)
    def gpu_instances(self, index: int) -> tuple[GiRecord, ...]:
        return self.read().gi_records(index)

    def possible_placements(self, index: int, profile: str) -> tuple[tuple[int, int], ...]:
        m = self.read().gpu_model(index)
        if not m.has_profile(profile):
            raise NvmlCallError(NVML_ERROR_NOT_SUPPORTED, f"{m.name} has no GPU instance profile {profile}")
        p = m.profile(profile)
        return tuple((s, p.memory_slices) for s in p.starts)

    def create_gpu_instance(self, index: int, profile: str, start: int) -> int:
        with self.transaction() as st:
            st.take_nvml_fault("create_gpu_instance")
            return int(st.create_gpu_instance(index, profile, start, with_ci=False)["gi_id"])

    def create_compute_instance(self, index: int, gi_id: int) -> int:
        with self.transaction() as st:
            st.take_nvml_fault("create_compute_instance")
            return st.create_compute_instance(index, gi_id)

    def destroy_compute_instance(self, index: int, gi_id: int, ci_id: int) -> None:
        with self.transaction() as st:
            st.take_nvml_fault("destroy_compute_instance")
            st.destroy_compute_instance(index, gi_id, ci_id)

    def destroy_gpu_instance(self, index: int, gi_id: int) -> None:
        with self.transaction() as st:
            st.take_nvml_fault("destroy_gpu_instance")
            st.destroy_gpu_instance(index, gi_id, with_cis=False)

    def inject_nvml_failure(self, call: str, code: int) -> None:
        """The next MigOps ``call`` (after any queued before it) fails with NVML ``code``."""
        with self.transaction() as st:
            st.faults["nvml"] = [*(st.faults.get("nvml") or []), [call, code]]

    def inject_migparted_failure(self, count: int = 1) -> None:
        """The next ``count`` simulated applies fail (after clearing the GPU, as a real failure does)."""
        with self.transaction() as st:
            st.faults["migparted_fail"] = int(st.faults.get("migparted_fail", 0)) + count

    def inject_migparted_hang(self, count: int = 1, seconds: float = 3600.0) -> None:
        """The next ``count`` simulated applies hang for ``seconds`` before doing anything."""
        with self.transaction() as st:
            st.faults["migparted_hang"] = int(st.faults.get("migparted_hang", 0)) + count
            st.faults["migparted_hang_s"] = seconds


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    with _thread_lock(path), open(path + ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read(path: str) -> dict[str, Any]:
    return _parse(path, _read_text(path))


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as e:
        raise GpuBackendError(f"cannot read simulated GPU state {path}: {e}") from e


def _parse(path: str, text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise GpuBackendError(f"cannot read simulated GPU state {path}: {e}") from e
    if not isinstance(doc, dict) or doc.get("v") != STATE_VERSION or not isinstance(doc.get("gpus"), list):
        raise GpuBackendError(f"{path}: not a dynamig simulated GPU state (v{STATE_VERSION})")
    return doc


def _encode(doc: dict[str, Any]) -> str:
    """The file's text: one line, keys sorted (``json.dumps`` without indent runs the C encoder; an
    indented dump runs the pure-Python one, most of the demo's time in the simulated GPUs)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def _write(path: str, doc: dict[str, Any]) -> None:
    _write_text(path, _encode(doc))


def _write_text(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".sim-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
