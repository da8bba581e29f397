"""``nvidia-mig-parted-sim``: a simulated ``nvidia-mig-parted`` over the simulated GPUs.

Same command line (``[-d] apply|assert|export`` with ``-f -c -k -m -s -a -o -l`` and the
``MIG_PARTED_*`` environment equivalents), same config validation and messages
(:mod:`deviceplugin.migparted`), same output (``MIG configuration applied successfully``; failures as
a logrus ``level=fatal`` line on stderr) and the same exit codes: 0 on success, 1 on every error.

Apply follows mig-parted's semantics (``reference/mig.md`` §7.4): the mode step, when any selected GPU's
MIG mode differs, clears every selected MIG-enabled GPU; the config step skips GPUs already holding the
wanted profile counts and, for the others, destroys every instance (``In use by another client`` when
one runs a process) and creates the wanted set; when that fails the GPU is cleared again and left empty.
Placement: by default each GPU gets the one placement :func:`models.layouts.realize` gives (the slots the
planner named); ``DYNAMIG_SIM_MIGPARTED_PLACEMENT=nvml`` instead tries profile orderings with NVML
auto-placement, as the real tool does. Hook files are read and validated, not run.

The GPUs are the simulator state file named by ``DYNAMIG_SIM_STATE``. Fault injection:
``DYNAMIG_SIM_MIGPARTED_FAIL=N`` fails the next N applies that need a change (the GPU is left empty),
``DYNAMIG_SIM_MIGPARTED_HANG=N`` makes the next N applies hang for ``DYNAMIG_SIM_MIGPARTED_HANG_S``
seconds (default 3600); the counters live in the state file. ``SimBackend.inject_migparted_failure`` /
``inject_migparted_hang`` do the same per node.

:class:`InProcessMigParted` runs this same code inside the calling process behind
:class:`~deviceplugin.migparted.MigPartedRunner`'s interface (argv, environment, output, exit code,
timeout): the demo uses it so that an apply costs no interpreter start; tests keep the executable.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any, NoReturn

import yaml

from models.catalog import MigProfile
from models.errors import LayoutError
from models.layouts import realize

from .backend import NVML_ERROR_IN_USE, NvmlCallError
from .migparted import (
    ConfigEntry,
    MigPartedResult,
    MigPartedRunner,
    ParsedProfile,
    SpecError,
    parse_config,
    parse_mig_profile,
    select_config,
)
from .sim import ENV_STATE, SimBackend, SimState

ENV_FAIL = "DYNAMIG_SIM_MIGPARTED_FAIL"
ENV_HANG = "DYNAMIG_SIM_MIGPARTED_HANG"
ENV_HANG_S = "DYNAMIG_SIM_MIGPARTED_HANG_S"
ENV_PLACEMENT = "DYNAMIG_SIM_MIGPARTED_PLACEMENT"
VERSION = "v0.14.4-dynamig-sim"

# NVML enums mig-parted prints in its error chains.
_GI_ENUM = {"1g": 0, "2g": 1, "3g": 2, "4g": 3, "7g": 4, "1g+me": 7, "2g+me": 8, "1g-2mem": 9}
_CI_ENUM = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}


class _Io(threading.local):
    """Per-thread process surroundings: the real ones in the executable, captured ones in-process."""

    def __init__(self) -> None:
        self.stdout: IO[str] | None = None
        self.stderr: IO[str] | None = None
        self.stdin: IO[str] | None = None
        self.env: Mapping[str, str] | None = None
        self.killed: threading.Event | None = None


_io = _Io()


def _stdout() -> IO[str]:
    return _io.stdout or sys.stdout


def _stderr() -> IO[str]:
    return _io.stderr or sys.stderr


def _env() -> Mapping[str, str]:
    return os.environ if _io.env is None else _io.env


def _print(line: str) -> None:
    _stdout().write(line + "\n")


class _Fail(Exception):
    """An error on mig-parted's error chain (lower-case, wrapped by the callers)."""


class _Log:
    def __init__(self, debug: bool) -> None:
        self.debug_on = debug

    def _emit(self, level: str, msg: str) -> None:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        _stderr().write(f"time=\"{now}\" level={level} msg={json.dumps(msg)}\n")
        _stderr().flush()

    def debug(self, msg: str) -> None:
        if self.debug_on:
            self._emit("debug", msg)

    def error(self, msg: str) -> None:
        self._emit("error", msg)

    def fatal(self, msg: str) -> NoReturn:
        self._emit("fatal", msg[:1].upper() + msg[1:])
        sys.exit(1)


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() in ("1", "t", "true", "yes", "y", "on")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # urfave/cli errors go through log.Fatal: exit 1
        self.print_usage(_stderr())
        _Log(False).fatal(message)

    def _print_message(self, message: str, file: Any = None) -> None:  # argparse: SupportsWrite | None
        if message:
            (_stdout() if file is None or file is sys.stdout else _stderr()).write(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nvidia-mig-parted", description="Manage MIG partitions across the full set of NVIDIA GPUs "
                                                      "on a node (dynamig simulator)")
    p.add_argument("-d", "--debug", action="store_true", default=_truthy(_env().get("MIG_PARTED_DEBUG")))
    p.add_argument("-v", "--version", action="version", version=f"nvidia-mig-parted version {VERSION}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    env = _env().get

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-f", "--config-file", default=env("MIG_PARTED_CONFIG_FILE", ""))
        sp.add_argument("-c", "--selected-config", default=env("MIG_PARTED_SELECTED_CONFIG", ""))
        sp.add_argument("-m", "--mode-only", action="store_true",
                        default=_truthy(env("MIG_PARTED_MODE_CHANGE_ONLY")))

    ap = sub.add_parser("apply", help="Apply changes (if necessary) for a specific MIG configuration")
    common(ap)
    ap.add_argument("-k", "--hooks-file", default=env("MIG_PARTED_HOOKS_FILE", ""))
    ap.add_argument("-s", "--skip-reset", action="store_true", default=_truthy(env("MIG_PARTED_SKIP_RESET")))
    asp = sub.add_parser("assert", help="Assert that a specific MIG configuration is currently applied")
    common(asp)
    asp.add_argument("-a", "--valid-config", action="store_true", default=_truthy(env("MIG_PARTED_VALID_CONFIG")))
    ep = sub.add_parser("export", help="Export the MIG configuration from all GPUs in a compatible format")
    ep.add_argument("-o", "--output-format", default=env("MIG_PARTED_OUTPUT_FORMAT", "yaml"))
    ep.add_argument("-l", "--config-label", default=env("MIG_PARTED_CONFIG_LABEL", "current"))
    return p


# ----------------------------------------------------------------------------- state helpers


def _backend() -> SimBackend:
    path = _env().get(ENV_STATE)
    if not path:
        raise _Fail(f"error initializing NVML: Driver Not Loaded (simulator: {ENV_STATE} is not set)")
    try:
        return SimBackend(path)
    except Exception as e:
        raise _Fail(f"error initializing NVML: {e}") from e


def _walk(state: SimState, entries: Sequence[ConfigEntry]) -> list[tuple[ConfigEntry, int]]:
    gpus = sorted(state.gpus, key=lambda g: g["index"])
    return [(e, g["index"]) for e in entries for g in gpus if e.matches(g["index"], g.get("pci_device_id", ""))]


def _current(state: SimState, index: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in state.gpu(index)["instances"]:
        out[x["profile"]] = out.get(x["profile"], 0) + 1
    return out


def _equals(current: dict[str, int], desired: dict[str, int]) -> bool:
    """``types.MigConfig.Equals`` (a zero count in one map makes the maps differ, as in Go)."""
    if len(current) != len(desired):
        return False
    return all(desired.get(k, 0) > 0 and v == desired[k] for k, v in current.items())


def _assert_mode(state: SimState, walk: list[tuple[ConfigEntry, int]]) -> None:
    for e, i in walk:
        capable = state.gpu_model(i).mig_capable
        if not capable and e.mig_enabled:
            raise _Fail("unable to assert MIG mode enabled on non MIG-capable GPU")
        if not capable:
            continue
        if bool(state.gpu(i)["mig_enabled"]) != e.mig_enabled:
            raise _Fail("current mode different than mode being asserted")


def _assert_config(state: SimState, walk: list[tuple[ConfigEntry, int]]) -> None:
    matched = {g["index"]: False for g in state.gpus}
    for e, i in walk:
        capable = state.gpu_model(i).mig_capable
        if not capable and not e.mig_enabled:
            matched[i] = True
            continue
        if not capable:
            raise _Fail("error getting MIG mode: Not Supported")
        enabled = bool(state.gpu(i)["mig_enabled"])
        if not e.mig_enabled and not enabled:
            matched[i] = True
            continue
        if not enabled:
            raise _Fail("error getting MIGConfig: error asserting MIG enabled: MIG mode is disabled")
        matched[i] = _equals(_current(state, i), dict(e.mig_devices or {}))
    if not all(matched.values()):
        raise _Fail("not all GPUs match the specified config")


def _clear(state: SimState, index: int) -> None:
    """``ClearMigConfig``: destroy every CI then GI; the first busy one stops the walk."""
    m = state.gpu_model(index)
    for x in sorted(state.gpu(index)["instances"], key=lambda x: x["gi_id"]):
        try:
            state.destroy_gpu_instance(index, x["gi_id"])
        except NvmlCallError as err:
            p = m.profile(x["profile"])
            gi = _GI_ENUM.get(p.klass, 0)
            ci = _CI_ENUM.get(p.compute_slices, 0)
            if err.code == NVML_ERROR_IN_USE:
                raise _Fail(f"error walking gpu instances for '{index}': error walking compute instances for "
                            f"'{gi}': error destroying Compute instance for profile '({ci}, 0)': {err.text}") from None
            raise _Fail(f"error walking gpu instances for '{index}': error destroying GPU instance for profile "
                        f"'{gi}': {err.text}") from None


def _apply_mode(state: SimState, walk: list[tuple[ConfigEntry, int]], log: _Log) -> None:
    for e, i in walk:
        capable = state.gpu_model(i).mig_capable
        log.debug(f"    MIG capable: {str(capable).lower()}")
        if not capable and (e.matches_all or not e.mig_enabled):
            log.debug("    Skipping -- non MIG-capable GPU")
            continue
        if not capable:
            raise _Fail("cannot set MIG mode on non MIG-capable GPU")
        if state.gpu(i)["mig_enabled"]:
            log.debug("    Clearing existing MIG configuration")
            try:
                _clear(state, i)
            except _Fail as err:
                raise _Fail(f"error clearing existing MIG configurations: {err}") from None
        log.debug(f"    Updating MIG mode: {'Enabled' if e.mig_enabled else 'Disabled'}")
        try:
            state.set_mig_mode(i, e.mig_enabled)
        except NvmlCallError as err:
            raise _Fail(f"error setting MIG mode: {err.text}") from None


def _resolve(state: SimState, index: int, key: str, mp: ParsedProfile) -> MigProfile:
    """The GI profile mig-parted's ``GIProfileID`` names on this GPU (first slice-count match)."""
    m = state.gpu_model(index)
    same = [p for p in m.profiles if p.compute_slices == mp.g and p.media == mp.media]
    if not same:
        raise _Fail(f"error getting GPU instance profile info for '{key}': Not Supported")
    if mp.c != mp.g:
        raise _Fail(f"error getting Compute instance profile info for '{key}': Not Supported")
    for p in same:
        if p.name == str(mp):
            return p
    expected = min(same, key=lambda p: (p.memory_slices, p.name))
    raise _Fail(f"unsupported MIG Device specified {key}, expected {expected.name} instead")


def _orderings(items: list[Any]) -> Iterator[list[Any]]:
    """mig-parted's ``iteratePermutationsUntilSuccess``: swap-based, skipping duplicate swaps."""
    mps = list(items)

    def rec(i: int) -> Iterator[list[Any]]:
        if i >= len(mps):
            yield list(mps)
            return
        for j in range(i, len(mps)):
            if all(mps[k] != mps[j] for k in range(i, j)):
                mps[i], mps[j] = mps[j], mps[i]
                yield from rec(i + 1)
                mps[i], mps[j] = mps[j], mps[i]

    yield from rec(0)


def _set_config(state: SimState, index: int, desired: dict[str, int], log: _Log, inject_failure: bool) -> None:
    m = state.gpu_model(index)
    flat: list[tuple[str, ParsedProfile]] = []
    for key, n in desired.items():
        mp = parse_mig_profile(key)
        flat.extend([(key, mp)] * n)
    flat.sort(key=lambda kp: (-kp[1].g, -kp[1].c, "me" if kp[1].media else ""))
    # Candidate orderings: (key, start or None) lists.
    plans: Iterator[list[tuple[str, int | None]]]
    placement = _env().get(ENV_PLACEMENT, "realize")
    realized: list[tuple[str, int | None]] | None = None
    if placement != "nvml":
        try:
            resolved = {key: _resolve(state, index, key, mp) for key, mp in flat}
            lay = realize(m, {resolved[k].name: n for k, n in desired.items() if n > 0})
            by_name: dict[str, list[int]] = {}
            for s in lay:
                by_name.setdefault(s.profile, []).append(s.start)
            realized = [(key, by_name[resolved[key].name].pop(0)) for key, _ in flat]
        except (_Fail, LayoutError):
            realized = None
    if realized is not None:
        plans = iter([realized])
    else:
        plans = ([(k, None) for k, _ in order] for order in _orderings(flat))
    for plan in plans:
        try:
            if _current(state, index):
                try:
                    _clear(state, index)
                except _Fail as err:
                    raise _Fail(f"error clearing MigConfig: {err}") from None
                if _current(state, index):
                    raise _Fail("exceeded maximum attempts to clear MigConfig")
            if inject_failure and plan:
                raise _Fail(f"error creating GPU instance for '{plan[0][0]}': Insufficient Resources")
            for key, start in plan:
                p = _resolve(state, index, key, parse_mig_profile(key))
                try:
                    state.create_gpu_instance(index, p.name, start)
                except NvmlCallError as err:
                    raise _Fail(f"error creating GPU instance for '{key}': {err.text}") from None
            return
        except _Fail as err:
            msg = str(err)
            log.error(msg[:1].upper() + msg[1:])
            if inject_failure:
                break
    try:
        _clear(state, index)
    except _Fail:
        log.error(f"Error clearing MIG config on GPU {index}, erroneous devices may persist")
    raise _Fail("error attempting multiple config orderings: all orderings failed")


def _apply_config(state: SimState, walk: list[tuple[ConfigEntry, int]], log: _Log, inject_failure: bool) -> None:
    for e, i in walk:
        capable = state.gpu_model(i).mig_capable
        if not capable and (e.matches_all or not e.mig_enabled):
            continue
        if not capable:
            raise _Fail("cannot set MIG config on non MIG-capable GPU")
        enabled = bool(state.gpu(i)["mig_enabled"])
        if e.mig_enabled and not enabled:
            raise _Fail("unable to apply MIG config with MIG mode disabled")
        if not e.mig_enabled and enabled:
            raise _Fail("MIG mode is currently enabled, but the configuration specifies it should be disabled")
        if not e.mig_enabled:
            log.debug("    Skipping MIG config -- MIG disabled")
            continue
        desired = dict(e.mig_devices or {})
        log.debug(f"    Updating MIG config: {desired}")
        if _equals(_current(state, i), desired):
            log.debug("    Skipping -- already set to desired value")
            continue
        try:
            _set_config(state, i, desired, log, inject_failure)
        except _Fail as err:
            raise _Fail(f"error setting MIGConfig: {err}") from None


# ----------------------------------------------------------------------------- commands


def _load(args: argparse.Namespace) -> tuple[str, list[ConfigEntry]]:
    if not args.config_file:
        raise _Fail("missing required flags 'config-file'")
    try:
        if args.config_file == "-":
            text = (_io.stdin or sys.stdin).read()
        else:
            with open(args.config_file, encoding="utf-8") as fh:
                text = fh.read()
    except OSError as e:
        raise _Fail(f"error parsing config file: read error: open {args.config_file}: "
                    f"{(e.strerror or str(e)).lower()}") from None
    try:
        configs = parse_config(text)
    except SpecError as e:
        raise _Fail(f"error parsing config file: {e}") from None
    try:
        return select_config(configs, args.selected_config)
    except SpecError as e:
        raise _Fail(f"error selecting MIG config: {e}") from None


def _take_fault(state: SimState, kind: str, env_name: str) -> bool:
    f = state.faults
    if int(f.get(f"migparted_{kind}", 0)) > 0:
        f[f"migparted_{kind}"] = int(f[f"migparted_{kind}"]) - 1
        return True
    try:
        budget = int(_env().get(env_name, "0") or 0)
    except ValueError:
        budget = 0
    used = int(f.get(f"env_{kind}_used", 0))
    if used < budget:
        f[f"env_{kind}_used"] = used + 1
        return True
    return False


def _cmd_apply(args: argparse.Namespace, log: _Log) -> None:
    _, entries = _load(args)
    if args.hooks_file:
        try:
            with open(args.hooks_file, encoding="utf-8") as fh:
                yaml.safe_load(fh)
        except OSError as e:
            raise _Fail(f"error parsing hooks file: read error: open {args.hooks_file}: "
                        f"{(e.strerror or str(e)).lower()}") from None
        except yaml.YAMLError as e:
            raise _Fail(f"error parsing hooks file: unmarshal error: {e}") from None
    backend = _backend()
    with backend.transaction() as st:
        hang = _take_fault(st, "hang", ENV_HANG)
        hang_s = float(st.faults.get("migparted_hang_s") or _env().get(ENV_HANG_S) or 3600)
    if hang:
        log.debug(f"simulated hang for {hang_s:g}s")
        if _io.killed is None:
            time.sleep(hang_s)
        elif _io.killed.wait(hang_s):  # in-process and past its timeout: "killed" before it applies
            raise SystemExit(-9)
    try:
        with backend.transaction() as st:
            walk = _walk(st, entries)
            log.debug("Checking current MIG mode...")
            try:
                _assert_mode(st, walk)
            except _Fail as err:
                log.debug(str(err))
                log.debug("Applying MIG mode change...")
                _apply_mode(st, walk, log)
            if not args.mode_only:
                log.debug("Checking current MIG device configuration...")
                try:
                    _assert_config(st, walk)
                except _Fail:
                    log.debug("Applying MIG device configuration...")
                    _apply_config(st, walk, log, _take_fault(st, "fail", ENV_FAIL))
    except _Fail as err:
        raise _Fail(f"error applying MIG configuration with hooks: {err}") from None
    _print("MIG configuration applied successfully")


def _cmd_assert(args: argparse.Namespace, log: _Log) -> None:
    _, entries = _load(args)
    if args.valid_config:
        _print("Selected MIG configuration is valid")
        return
    st = _backend().read()
    walk = _walk(st, entries)
    try:
        _assert_mode(st, walk)
    except _Fail as err:
        log.debug(str(err)[:1].upper() + str(err)[1:])
        raise _Fail("Assertion failure: selected configuration not currently applied") from None
    if args.mode_only:
        _print("Selected MIG mode settings from configuration currently applied")
        return
    try:
        _assert_config(st, walk)
    except _Fail as err:
        log.debug(str(err)[:1].upper() + str(err)[1:])
        raise _Fail("Assertion failure: selected configuration not currently applied") from None
    _print("Selected MIG configuration currently applied")


def export_spec(state: SimState, label: str = "current") -> dict[str, Any]:
    """``ExportMigConfigs`` + ``mergeMigConfigSpecs``: the node's state as a one-config spec."""
    specs: list[tuple[list[str], list[int], bool, dict[str, int]]] = []
    for g in sorted(state.gpus, key=lambda g: g["index"]):
        enabled = bool(g["mig_enabled"]) and state.gpu_model(g["index"]).mig_capable
        specs.append(([g.get("pci_device_id", "0x000010DE")], [g["index"]], enabled,
                      _current(state, g["index"]) if enabled else {}))
    merged: list[tuple[list[str], list[int], bool, dict[str, int]]] = []
    for filt0, devs0, en0, mig0 in specs:
        for k, (filt1, devs1, en1, mig1) in enumerate(merged):
            if en1 == en0 and _equals(mig1, mig0):
                merged[k] = (sorted(set(filt1) | set(filt0)), sorted(set(devs1) | set(devs0)), en1, mig1)
                break
        else:
            merged.append((list(filt0), list(devs0), en0, mig0))
    df_devices: dict[str, set[int]] = {}
    for filt0, devs0, _, _ in specs:
        df_devices.setdefault(filt0[0], set()).update(devs0)
    out: list[tuple[Any, Any, bool, dict[str, int]]] = []
    for filt1, devs1, en1, mig1 in merged:
        spec_devices: set[int] = set()
        for df in filt1:
            spec_devices |= df_devices[df]
        filt: Any = None if len(df_devices) == 1 else (filt1[0] if len(filt1) == 1 else filt1)
        devices: Any = "all" if sorted(spec_devices) == devs1 else devs1
        out.append((filt, devices, en1, mig1))
    if len(out) == 1:
        out = [(None, *out[0][1:])]
    entries = []
    for filt, devices, enabled, devs in out:
        e: dict[str, Any] = {}
        if filt:
            e["device-filter"] = filt
        e.update({"devices": devices, "mig-enabled": enabled, "mig-devices": dict(sorted(devs.items()))})
        entries.append(e)
    return {"version": "v1", "mig-configs": {label: entries}}


def _cmd_export(args: argparse.Namespace, log: _Log) -> None:
    if args.output_format not in ("json", "yaml"):
        raise _Fail(f"unrecognized 'output-format': {args.output_format}")
    spec = export_spec(_backend().read(), args.config_label)
    if args.output_format == "json":
        _stdout().write(json.dumps(spec, indent=2))
    else:
        _stdout().write(yaml.safe_dump(spec, sort_keys=False, default_flow_style=None))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log = _Log(args.debug)
    if not args.command:
        _parser().print_help()
        return 0
    try:
        {"apply": _cmd_apply, "assert": _cmd_assert, "export": _cmd_export}[args.command](args, log)
    except _Fail as err:
        log.fatal(str(err))
    except ValueError as err:  # a profile that slipped past validation
        log.fatal(str(err))
    return 0


class InProcessMigParted(MigPartedRunner):
    """The simulated mig-parted run in this process (in a thread of its own, so the timeout holds)
    with the runner's argv, environment and timeout; same output and exit codes as the executable."""

    def __init__(self, timeout_s: float = 120.0, env: Mapping[str, str] | None = None, debug: bool = False) -> None:
        super().__init__(("nvidia-mig-parted-sim",), timeout_s, env, debug)

    def run(self, args: Sequence[str], timeout_s: float | None = None) -> MigPartedResult:
        argv = (*self.command, *(("-d",) if self.debug else ()), *args)
        env = {**os.environ, **self.env}
        limit = self.timeout_s if timeout_s is None else timeout_s
        out, err, killed = io.StringIO(), io.StringIO(), threading.Event()
        code: list[int] = []

        def body() -> None:
            _io.stdout, _io.stderr, _io.stdin, _io.env, _io.killed = out, err, io.StringIO(), env, killed
            try:
                code.append(main(argv[1:]))
            except SystemExit as e:
                code.append(e.code if isinstance(e.code, int) else (0 if e.code is None else 1))
            except Exception:  # what the interpreter does with an uncaught error: traceback, exit 1
                err.write(traceback.format_exc())
                code.append(1)

        t0 = time.monotonic()
        worker = threading.Thread(target=body, name="nvidia-mig-parted-sim", daemon=True)
        worker.start()
        worker.join(limit)
        if worker.is_alive():
            killed.set()
            worker.join()
            return MigPartedResult(argv, None, out.getvalue(), err.getvalue(), time.monotonic() - t0, True)
        return MigPartedResult(argv, code[0], out.getvalue(), err.getvalue(), time.monotonic() - t0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
