"""nvidia-mig-parted: the config schema (real messages), the simulated GPUs and executable, and how the
device plugin handles busy GPUs, failed and hung applies."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest

from deviceplugin.backend import NVML_ERROR_IN_USE, NVML_ERROR_INSUFFICIENT_RESOURCES, NvmlCallError
from deviceplugin.migparted import GpuTarget, SpecError, parse_config, render_config, select_config
from deviceplugin.sim import ENV_STATE, SimBackend, new_state
from models.codecs import POD_ALLOC_ERROR, POD_BIND_PHASE
from models.types import NodeMode
from tests.fakes.kubelet import NodeHarness

A100 = "A100-SXM4-40GB"
SIM = os.path.join(os.path.dirname(sys.executable), "nvidia-mig-parted-sim")
PRE = "unmarshal error: error unmarshaling JSON: while decoding JSON: "


# ----------------------------------------------------------------------------- the schema


def _one(entry: str) -> str:
    return f"version: v1\nmig-configs:\n  c:\n  - {entry}\n"


@pytest.mark.parametrize(("text", "message"), [
    ("version: v2\n", "unknown version: v2"),
    ("mig-configs: {}\n", "unable to parse with missing 'version' field"),
    ("version: v1\nfoo: 1\n", "unexpected field: foo"),
    ("version: v1\nmig-configs: {}\n", "at least one entry in 'mig-configs' is required"),
    ("version: v1\nmig-configs:\n  c: []\n", "at least one entry in 'c' is required"),
    (_one("devices: [0]"), "missing required field: mig-enabled"),
    (_one("mig-enabled: true"), "missing required field: devices"),
    (_one("devices: some\n    mig-enabled: false"), "invalid string input for 'devices': some"),
    (_one("devices: [0]\n    mig-enabled: true"), "missing required field 'mig-devices' when 'mig-enabled' is true"),
    (_one("devices: [0]\n    mig-enabled: false\n    mig-devices: {1g.5gb: 1}"),
     "MIG devices included when 'mig-enabled' is false"),
    (_one("devices: [0]\n    mig-enabled: true\n    mig-devices: {1g.5gb: 0}"),
     "error validating values in 'mig-devices' field: all counts for all MigProfiles are 0"),
    (_one("devices: [0]\n    mig-enabled: true\n    mig-devices: {1g.5gb: -1}"),
     "error validating values in 'mig-devices' field: invalid count for '-1': <nil>"),
    (_one("devices: [0]\n    mig-enabled: true\n    mig-devices: {1x.5gb: 1}"),
     "error validating values in 'mig-devices' field: invalid format for '1x.5gb': error parsing '.' separated "
     "fields in MigProfile string: missing 'g' from '%dg'"),
    (_one("devices: [0]\n    mig-enabled: true\n    mig-devices: {5g.5gb: 1}"),
     "error validating values in 'mig-devices' field: invalid format for '5g.5gb': unknown Compute Instance slice "
     "size: 5"),
    (_one("devices: [0]\n    mig-enabled: true\n    mig-devices: {1c.5g.5gb: 1}"),
     "error validating values in 'mig-devices' field: invalid format for '1c.5g.5gb': unknown GPU Instance slice "
     "size: 5"),
    (_one("devices: [0]\n    mig-enabled: true\n    mig-devices: {1g.5gb+xx: 1}"),
     "error validating values in 'mig-devices' field: invalid format for '1g.5gb+xx': unknown MigProfile "
     "attribute: xx"),
    (_one("devices: [0]\n    mig-enabled: yes please"), "json: cannot unmarshal string into Go value of type bool"),
    (_one("devices: [0]\n    mig-enabled: true\n    mig-devices: {1g.5gb: 1.5}"),
     "json: cannot unmarshal number 1.5 into Go value of type int"),
    (_one("devices: [0.5]\n    mig-enabled: false"),
     "(json: cannot unmarshal array into Go value of type string, json: cannot unmarshal number 0.5 into Go value "
     "of type int)"),
    (_one("devices: [0]\n    mig-enabled: false\n    extra: 1"), "unexpected field: extra"),
])
def test_schema_errors_have_mig_parted_messages(text: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_config(text)
    assert str(err.value) == PRE + message


def test_schema_accepts_the_reference_example() -> None:
    text = """version: v1
mig-configs:
  dynamig-empty:
    - devices: all
      mig-enabled: true
      mig-devices: {}
  dynamig-mixed:
    - devices: [0, 1]
      mig-enabled: true
      mig-devices: {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2}
    - device-filter: "0x233010DE"
      devices: [3, 4, 5]
      mig-enabled: true
      mig-devices: {"1g.10gb+me": 1, "1c.2g.20gb": 1}
    - devices: [6, 7]
      mig-enabled: false
"""
    configs = parse_config(text)
    assert set(configs) == {"dynamig-empty", "dynamig-mixed"}
    entries = configs["dynamig-mixed"]
    assert entries[0].devices == (0, 1) and entries[0].mig_devices == {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2}
    assert entries[1].device_filter == ("0x233010DE",) and entries[1].matches(3, "0x233010DE")
    assert not entries[1].matches(3, "0x20B010DE") and not entries[2].mig_enabled
    with pytest.raises(SpecError, match="missing required flag 'selected-config' when more than one config"):
        select_config(configs, "")
    with pytest.raises(SpecError, match="selected mig-config not present: nope"):
        select_config(configs, "nope")


def test_render_config_round_trips() -> None:
    text = render_config("dynamig-x", [GpuTarget(1, True, {}), GpuTarget(0, True, {"3g.20gb": 2}),
                                       GpuTarget(2, False)])
    assert text.startswith("version: v1\nmig-configs:\n")
    (entries,) = parse_config(text).values()
    assert [(e.devices, e.mig_enabled, e.mig_devices) for e in entries] == [
        ((0,), True, {"3g.20gb": 2}), ((1,), True, {}), ((2,), False, None)]


# ----------------------------------------------------------------------------- the simulated NVML


def test_auto_placement_order_matters() -> None:
    # NVIDIA's A100 example: 1g,1g,2g,3g fails with Insufficient Resources, 3g,1g,2g,1g succeeds.
    st = new_state("n", [(A100, 1)], NodeMode.MIG)
    for p in ("1g.5gb", "1g.5gb", "2g.10gb"):
        st.create_gpu_instance(0, p)
    with pytest.raises(NvmlCallError) as err:
        st.create_gpu_instance(0, "3g.20gb")
    assert err.value.code == NVML_ERROR_INSUFFICIENT_RESOURCES and err.value.text == "Insufficient Resources"
    st = new_state("n", [(A100, 1)], NodeMode.MIG)
    for p in ("3g.20gb", "1g.5gb", "2g.10gb", "1g.5gb"):
        st.create_gpu_instance(0, p)
    assert sorted((x["profile"], x["start"]) for x in st.gpu(0)["instances"]) == [
        ("1g.5gb", 2), ("1g.5gb", 3), ("2g.10gb", 0), ("3g.20gb", 4)]


def test_occupied_placement_and_busy_instances() -> None:
    st = new_state("n", [(A100, 1)], NodeMode.MIG)
    inst = st.create_gpu_instance(0, "3g.20gb", 0)
    with pytest.raises(NvmlCallError) as err:
        st.create_gpu_instance(0, "2g.10gb", 2)
    assert err.value.code == NVML_ERROR_INSUFFICIENT_RESOURCES
    st.add_process(0, 4242, inst["uuid"])
    with pytest.raises(NvmlCallError) as err:
        st.destroy_gpu_instance(0, inst["gi_id"])
    assert err.value.code == NVML_ERROR_IN_USE and err.value.text == "In use by another client"
    with pytest.raises(NvmlCallError):
        st.set_mig_mode(0, False)
    st.remove_process(4242)
    st.clear(0)
    st.set_mig_mode(0, False)
    assert not st.gpu(0)["mig_enabled"]


# ----------------------------------------------------------------------------- the simulated executable


@pytest.fixture
def sim(tmp_path: os.PathLike[str]) -> Iterator[tuple[SimBackend, dict[str, str], str]]:
    path = os.path.join(str(tmp_path), "gpus.json")
    backend = SimBackend.create(path, "n", [(A100, 2)], NodeMode.MIG)
    env = {**os.environ, ENV_STATE: path}
    env.pop("DYNAMIG_SIM_MIGPARTED_FAIL", None)
    yield backend, env, str(tmp_path)


def _run(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SIM, *args], env=env, capture_output=True, text=True, timeout=60, input=stdin)


def _write(d: str, text: str) -> str:
    path = os.path.join(d, "cfg.yaml")
    with open(path, "w") as fh:
        fh.write(text)
    return path


def test_sim_apply_assert_export(sim: tuple[SimBackend, dict[str, str], str]) -> None:
    backend, env, d = sim
    cfg = _write(d, render_config("a", [GpuTarget(0, True, {"1g.5gb": 1, "2g.10gb": 3}), GpuTarget(1, True, {})]))
    r = _run(env, "assert", "-f", cfg, "-c", "a")
    assert r.returncode == 1 and "Assertion failure: selected configuration not currently applied" in r.stderr
    r = _run(env, "apply", "-f", cfg, "-c", "a")
    assert (r.returncode, r.stdout) == (0, "MIG configuration applied successfully\n")
    assert sorted((x.profile, x.start) for x in backend.gpus()[0].instances) == [
        ("1g.5gb", 6), ("2g.10gb", 0), ("2g.10gb", 2), ("2g.10gb", 4)]
    r = _run(env, "assert", "-f", cfg, "-c", "a")
    assert (r.returncode, r.stdout) == (0, "Selected MIG configuration currently applied\n")
    r = _run(env, "assert", "-a", "-f", cfg)  # single config: -c may be omitted
    assert (r.returncode, r.stdout) == (0, "Selected MIG configuration is valid\n")
    r = _run(env, "export", "-o", "json")
    assert r.returncode == 0
    import json

    doc = json.loads(r.stdout)
    assert doc["mig-configs"]["current"] == [
        {"devices": [0], "mig-enabled": True, "mig-devices": {"1g.5gb": 1, "2g.10gb": 3}},
        {"devices": [1], "mig-enabled": True, "mig-devices": {}}]
    # a second apply of the same config changes nothing (same MIG UUIDs)
    before = backend.gpus()[0].instances
    assert _run(env, "apply", "-f", cfg, "-c", "a").returncode == 0
    assert backend.gpus()[0].instances == before
    # the environment equivalents of -f and -c, and -f - (stdin)
    assert _run({**env, "MIG_PARTED_CONFIG_FILE": cfg, "MIG_PARTED_SELECTED_CONFIG": "a"}, "assert").returncode == 0
    with open(cfg) as fh:
        assert _run(env, "assert", "-f", "-", "-c", "a", stdin=fh.read()).returncode == 0


def test_sim_schema_error_exits_1_with_the_fatal_message(sim: tuple[SimBackend, dict[str, str], str]) -> None:
    _, env, d = sim
    r = _run(env, "apply", "-f", _write(d, "version: v2\n"))
    assert r.returncode == 1 and r.stdout == ""
    assert 'level=fatal msg="Error parsing config file: ' + PRE + 'unknown version: v2"' in r.stderr
    r = _run(env, "apply", "-c", "x")
    assert r.returncode == 1 and "Missing required flags 'config-file'" in r.stderr
    r = _run(env, "apply", "-f", os.path.join(d, "nope.yaml"))
    assert r.returncode == 1 and "read error: open" in r.stderr and "no such file or directory" in r.stderr
    r = _run(env, "frobnicate")
    assert r.returncode == 1


def test_sim_apply_on_busy_gpu_fails_in_use(sim: tuple[SimBackend, dict[str, str], str]) -> None:
    backend, env, d = sim
    cfg = _write(d, render_config("a", [GpuTarget(0, True, {"3g.20gb": 2}), GpuTarget(1, True, {})]))
    assert _run(env, "apply", "-f", cfg, "-c", "a").returncode == 0
    busy = backend.gpus()[0].instance_at("3g.20gb", 0)
    assert busy is not None
    backend.add_process(0, 777, busy.uuid)
    cfg = _write(d, render_config("b", [GpuTarget(0, True, {"7g.40gb": 1}), GpuTarget(1, True, {})]))
    r = _run(env, "apply", "-f", cfg, "-c", "b")
    assert r.returncode == 1
    assert "In use by another client" in r.stderr
    assert ("Error applying MIG configuration with hooks: error setting MIGConfig: error attempting multiple config "
            "orderings: all orderings failed") in r.stderr
    assert busy.uuid in {x.uuid for x in backend.gpus()[0].instances}  # the busy instance survived


def test_sim_fault_injection_env_leaves_gpu_empty(sim: tuple[SimBackend, dict[str, str], str]) -> None:
    backend, env, d = sim
    cfg = _write(d, render_config("a", [GpuTarget(0, True, {"3g.20gb": 2}), GpuTarget(1, True, {})]))
    assert _run(env, "apply", "-f", cfg, "-c", "a").returncode == 0
    cfg = _write(d, render_config("b", [GpuTarget(0, True, {"7g.40gb": 1}), GpuTarget(1, True, {})]))
    env_fail = {**env, "DYNAMIG_SIM_MIGPARTED_FAIL": "1"}
    r = _run(env_fail, "apply", "-f", cfg, "-c", "b")
    assert r.returncode == 1 and "all orderings failed" in r.stderr
    assert backend.gpus()[0].instances == ()  # cleared, as a real failed apply leaves it
    r = _run(env_fail, "apply", "-f", cfg, "-c", "b")  # only the next 1 apply fails
    assert r.returncode == 0 and backend.gpus()[0].profile_counts() == {"7g.40gb": 1}


def test_sim_nvml_placement_tries_orderings(sim: tuple[SimBackend, dict[str, str], str]) -> None:
    backend, env, d = sim
    cfg = _write(d, render_config("a", [GpuTarget(0, True, {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}),
                                        GpuTarget(1, True, {})]))
    r = _run({**env, "DYNAMIG_SIM_MIGPARTED_PLACEMENT": "nvml"}, "apply", "-f", cfg, "-c", "a")
    assert r.returncode == 0, r.stderr
    assert backend.gpus()[0].profile_counts() == {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}


def test_sim_mode_change_disables_and_enables(sim: tuple[SimBackend, dict[str, str], str]) -> None:
    backend, env, d = sim
    cfg = _write(d, render_config("a", [GpuTarget(0, False), GpuTarget(1, True, {"4g.20gb": 1})]))
    r = _run(env, "apply", "-f", cfg, "-c", "a")
    assert r.returncode == 0, r.stderr
    g0, g1 = backend.gpus()
    assert not g0.mig_enabled and g1.profile_counts() == {"4g.20gb": 1}


# ----------------------------------------------------------------------------- the plugin's handling


@pytest.fixture
def node() -> Iterator[NodeHarness]:
    with NodeHarness([(A100, 2)], mode="mig") as h:
        yield h


SEVEN = [("1g.5gb", s) for s in range(7)]


def test_busy_gpu_with_a_process_is_refused(node: NodeHarness) -> None:
    h = node
    h.pod("p0", [{"gpu": 0, "profile": "3g.20gb", "start": 0}], [{"gpu": 0, "slots": [("3g.20gb", 0), ("3g.20gb", 4)]}])
    h.kubelet.admit(1)
    # a process on the other (free) instance: nothing allocated there, but the GPU is not idle
    other = h.gpu(0).instance_at("3g.20gb", 4)
    h.backend.add_process(0, 4321, other.uuid)
    h.store.set_pod_phase("default", "p0", "Succeeded")  # p0 is gone: no allocated instance left
    h.pod("p1", [{"gpu": 0, "profile": "1g.5gb", "start": 0}], [{"gpu": 0, "slots": SEVEN}])
    with pytest.raises(grpc.RpcError) as err:
        h.kubelet.admit(1)
    assert "runs 1 process(es) (pid 4321)" in err.value.details()
    ann = h.annotations("p1")
    assert ann[POD_BIND_PHASE] == "failed" and "pid 4321" in ann[POD_ALLOC_ERROR]
    assert h.agent.applier.applies == 1 and h.lock_holder() is None


def test_gpu_holding_an_allocated_instance_is_refused(node: NodeHarness) -> None:
    h = node
    h.pod("p0", [{"gpu": 0, "profile": "3g.20gb", "start": 0}], [{"gpu": 0, "slots": [("3g.20gb", 0), ("3g.20gb", 4)]}])
    h.kubelet.admit(1)
    held = h.gpu(0).instance_at("3g.20gb", 0).uuid
    h.pod("p1", [{"gpu": 0, "profile": "7g.40gb", "start": 0}], [{"gpu": 0, "slots": [("7g.40gb", 0)]}])
    with pytest.raises(grpc.RpcError) as err:
        h.kubelet.admit(1)
    assert f"holds allocated instances (default/p0: {held})" in err.value.details()
    assert h.agent.applier.applies == 1
    assert h.gpu(0).profile_counts() == {"3g.20gb": 2}


def test_apply_failure_marks_pod_failed_and_reports_gpu_truthfully(node: NodeHarness) -> None:
    h = node
    h.pod("p0", [{"gpu": 1, "profile": "3g.20gb", "start": 0}], [{"gpu": 1, "slots": [("3g.20gb", 0), ("3g.20gb", 4)]}])
    h.kubelet.admit(1)
    h.store.set_pod_phase("default", "p0", "Succeeded")
    h.backend.inject_migparted_failure(1)
    h.pod("p1", [{"gpu": 1, "profile": "7g.40gb", "start": 0}], [{"gpu": 1, "slots": [("7g.40gb", 0)]}])
    with pytest.raises(grpc.RpcError) as err:
        h.kubelet.admit(1)
    assert "nvidia-mig-parted apply failed (exit 1)" in err.value.details()
    assert "all orderings failed" in err.value.details()
    ann = h.annotations("p1")
    assert ann[POD_BIND_PHASE] == "failed" and "re-partitioning GPU 1" in ann[POD_ALLOC_ERROR]
    assert h.lock_holder() is None
    # the GPU was left empty by the failed apply, and that is what the node reports
    assert h.gpu(1).instances == ()
    assert h.registration().gpus[1].instances == ()
    # the plugin still serves: the next pod gets its layout
    h.pod("p2", [{"gpu": 1, "profile": "7g.40gb", "start": 0}], [{"gpu": 1, "slots": [("7g.40gb", 0)]}])
    _, resp = h.kubelet.admit(1)
    assert resp.envs["NVIDIA_VISIBLE_DEVICES"] == h.gpu(1).instance_at("7g.40gb", 0).uuid
    assert h.annotations("p2")[POD_BIND_PHASE] == "success"


def test_apply_timeout_marks_pod_failed_and_keeps_serving() -> None:
    with NodeHarness([(A100, 1)], mode="mig", migparted_timeout_s=1.0) as h:
        h.backend.inject_migparted_hang(1, seconds=60)
        h.pod("p1", [{"gpu": 0, "profile": "7g.40gb", "start": 0}], [{"gpu": 0, "slots": [("7g.40gb", 0)]}])
        with pytest.raises(grpc.RpcError) as err:
            h.kubelet.admit(1)
        assert "timed out after 1s and was killed" in err.value.details()
        assert h.annotations("p1")[POD_BIND_PHASE] == "failed" and h.lock_holder() is None
        assert h.gpu(0).instances == ()
        h.agent.runner.timeout_s = 60.0  # a loaded CI machine must not make the healthy apply time out
        h.pod("p2", [{"gpu": 0, "profile": "7g.40gb", "start": 0}], [{"gpu": 0, "slots": [("7g.40gb", 0)]}])
        _, resp = h.kubelet.admit(1)
        assert resp.envs["NVIDIA_VISIBLE_DEVICES"].startswith("MIG-")


def test_missing_mig_parted_executable() -> None:
    with NodeHarness([(A100, 1)], mode="mig") as h:
        h.agent.runner.command = ("/nonexistent/nvidia-mig-parted",)
        h.pod("p1", [{"gpu": 0, "profile": "7g.40gb", "start": 0}], [{"gpu": 0, "slots": [("7g.40gb", 0)]}])
        with pytest.raises(grpc.RpcError) as err:
            h.kubelet.admit(1)
        assert "cannot run /nonexistent/nvidia-mig-parted" in err.value.details()


def test_enabling_mig_mode_with_a_busy_neighbour_is_refused(node: NodeHarness) -> None:
    h = node
    with h.backend.transaction() as st:
        st.set_mig_mode(1, False)
    h.pod("p0", [{"gpu": 0, "profile": "7g.40gb", "start": 0}], [{"gpu": 0, "slots": [("7g.40gb", 0)]}])
    h.kubelet.admit(1)
    h.pod("p1", [{"gpu": 1, "profile": "7g.40gb", "start": 0}], [{"gpu": 1, "slots": [("7g.40gb", 0)]}])
    with pytest.raises(grpc.RpcError) as err:
        h.kubelet.admit(1)
    assert "enabling MIG mode on GPU 1" in err.value.details()
    h.store.set_pod_phase("default", "p0", "Succeeded")
    h.pod("p2", [{"gpu": 1, "profile": "7g.40gb", "start": 0}], [{"gpu": 1, "slots": [("7g.40gb", 0)]}])
    h.kubelet.admit(1)
    assert h.gpu(1).mig_enabled and h.gpu(1).profile_counts() == {"7g.40gb": 1}
    assert h.gpu(0).profile_counts() == {"7g.40gb": 1}  # recreated by the mode step, still there
