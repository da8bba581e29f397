"""nvidia-mig-parted: its config schema (``api/spec/v1``), a config writer, and a runner.

The parser reproduces mig-parted's own validation and error texts (``reference/mig.md`` §7.1), so the
simulated executable rejects exactly what the real one rejects, with the same messages. The runner
executes ``<mig-parted> apply -f FILE -c NAME`` as an argument list with a timeout and turns every
failure into a :class:`MigPartedError` with a one-line reason.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

SPEC_VERSION = "v1"

# ----------------------------------------------------------------------------- schema


class SpecError(Exception):
    """The config file does not parse; the message is what mig-parted prints after
    ``error parsing config file: ``."""


class _GoError(Exception):
    pass


@dataclass(frozen=True)
class ConfigEntry:
    """One ``MigConfigSpec``: which GPUs (``"all"`` or indices, optional PCI filter) and their state."""

    devices: str | tuple[int, ...]
    mig_enabled: bool
    mig_devices: dict[str, int] | None = None
    device_filter: tuple[str, ...] | None = None

    def matches(self, index: int, pci_device_id: str) -> bool:
        if self.device_filter and not any(_device_id_eq(f, pci_device_id) for f in self.device_filter):
            return False
        if self.devices == "all":
            return True
        return index in self.devices

    @property
    def matches_all(self) -> bool:
        return self.devices == "all"


def _device_id_eq(filt: str, hw: str) -> bool:
    def parse(s: str) -> tuple[int, int | None] | None:
        parts = s.split(":")
        try:
            main = int(parts[0], 0)
            sub = int(parts[1], 0) if len(parts) == 2 else None
        except (ValueError, IndexError):
            return None
        return main, sub

    f, h = parse(filt), parse(hw)
    if f is None or h is None:
        return False
    return f[0] == h[0] and (f[1] is None or f[1] == h[1])


def _jtype(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "string"  # dates and other YAML scalars arrive as strings in sigs.k8s.io/yaml


def _type_error(v: Any, gotype: str) -> str:
    if gotype == "int" and isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"json: cannot unmarshal number {_num(v)} into Go value of type int"
    return f"json: cannot unmarshal {_jtype(v)} into Go value of type {gotype}"


def _num(v: float | int) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def _as_int(v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _GoError(_type_error(v, "int"))
    if isinstance(v, float):
        if not v.is_integer():
            raise _GoError(_type_error(v, "int"))
        return int(v)
    return v


_INT_RE = re.compile(r"[+-]?[0-9]+")


def _profile_field(s: str, fld: str) -> int:
    if s.strip() != s:
        raise _GoError(f"leading or trailing spaces on '%d{fld}'")
    if not s.endswith(fld):
        raise _GoError(f"missing '{fld}' from '%d{fld}'")
    num = s[: -len(fld)]
    if not _INT_RE.fullmatch(num):
        raise _GoError(f"malformed number in '%d{fld}'")
    return int(num)


def _profile_attrs(s: str) -> list[str]:
    attrs = s.split(",")
    seen: set[str] = set()
    for a in attrs:
        if a in seen:
            raise _GoError("non unique attribute in list")
        if a == "":
            raise _GoError("empty attribute in list")
        if a.strip() != a:
            raise _GoError("leading or trailing spaces in attribute")
        if a[0].isdigit():
            raise _GoError("attribute begins with a number")
        if not all(c.isascii() and c.isalnum() for c in a):
            raise _GoError("non alpha-numeric character or digit in attribute")
        seen.add(a)
    return attrs


_SLICES = (1, 2, 3, 4, 6, 7, 8)


@dataclass(frozen=True)
class ParsedProfile:
    c: int
    g: int
    gb: int
    media: bool

    def __str__(self) -> str:
        suffix = "+me" if self.media else ""
        if self.c == self.g:
            return f"{self.g}g.{self.gb}gb{suffix}"
        return f"{self.c}c.{self.g}g.{self.gb}gb{suffix}"


def parse_mig_profile(profile: str) -> ParsedProfile:
    """mig-parted's ``ParseMigProfile`` (``1g.5gb``, ``1g.5gb+me``, ``1c.2g.10gb``); raises ValueError."""
    try:
        return _parse_mig_profile(profile)
    except _GoError as e:
        raise ValueError(str(e)) from None


def _parse_mig_profile(profile: str) -> ParsedProfile:
    if not profile:
        raise _GoError("empty MigProfile string")
    split = profile.split("+", 1)
    attrs: list[str] = []
    if len(split) == 2:
        try:
            attrs = _profile_attrs(split[1])
        except _GoError as e:
            raise _GoError(f"error parsing attributes following '+' in MigProfile string: {e}") from None
    try:
        parts = split[0].split(".", 2)
        if len(parts) == 3:
            c = _profile_field(parts[0], "c")
            g = _profile_field(parts[1], "g")
            gb = _profile_field(parts[2], "gb")
        elif len(parts) == 2:
            g = _profile_field(parts[0], "g")
            gb = _profile_field(parts[1], "gb")
            c = g
        else:
            raise _GoError("parsed wrong number of fields, expected 2 or 3")
    except _GoError as e:
        raise _GoError(f"error parsing '.' separated fields in MigProfile string: {e}") from None
    if c not in _SLICES:
        raise _GoError(f"unknown Compute Instance slice size: {c}")
    if g not in _SLICES:
        raise _GoError(f"unknown GPU Instance slice size: {g}")
    for a in attrs:
        if a != "me":
            raise _GoError(f"unknown MigProfile attribute: {a}")
    return ParsedProfile(c, g, gb, bool(attrs))


def _mig_devices(v: Any) -> dict[str, int] | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise _GoError(_type_error(v, "types.MigConfig"))
    out = {str(k): _as_int(n) for k, n in v.items()}
    # types.MigConfig.AssertValid
    if out:
        try:
            for k in sorted(out):
                try:
                    _parse_mig_profile(k)
                except _GoError as e:
                    raise _GoError(f"invalid format for '{k}': {e}") from None
                if out[k] < 0:
                    raise _GoError(f"invalid count for '{out[k]}': <nil>")
            if not any(n > 0 for n in out.values()):
                raise _GoError("all counts for all MigProfiles are 0")
        except _GoError as e:
            raise _GoError(f"error validating values in 'mig-devices' field: {e}") from None
    return out


def _entry(e: Any) -> ConfigEntry:
    if e is None:
        e = {}
    if not isinstance(e, dict):
        raise _GoError(_type_error(e, "map[string]json.RawMessage"))
    for r in ("devices", "mig-enabled"):
        if r not in e:
            raise _GoError(f"missing required field: {r}")
    devices: str | tuple[int, ...] = "all"
    dfilter: tuple[str, ...] | None = None
    enabled = False
    mig_devices: dict[str, int] | None = None
    for k, v in e.items():
        if k == "device-filter":
            if v is None or isinstance(v, str):
                dfilter = (v,) if v else None
            elif isinstance(v, list) and all(isinstance(x, str) or x is None for x in v):
                dfilter = tuple(x or "" for x in v)
            else:
                if isinstance(v, list):
                    err2 = _type_error(next(x for x in v if not (isinstance(x, str) or x is None)), "string")
                else:
                    err2 = _type_error(v, "[]string")
                raise _GoError(f"({_type_error(v, 'string')}, {err2})")
        elif k == "devices":
            if v is None or isinstance(v, str):
                if v != "all":
                    raise _GoError(f"invalid string input for 'devices': {v or ''}")
                devices = "all"
            elif isinstance(v, list):
                try:
                    devices = tuple(_as_int(x) for x in v)
                except _GoError as err2:
                    raise _GoError(f"({_type_error(v, 'string')}, {err2})") from None
            else:
                raise _GoError(f"({_type_error(v, 'string')}, {_type_error(v, '[]int')})")
        elif k == "mig-enabled":
            if v is not None and not isinstance(v, bool):
                raise _GoError(_type_error(v, "bool"))
            enabled = bool(v)
        elif k == "mig-devices":
            mig_devices = _mig_devices(v)
        else:
            raise _GoError(f"unexpected field: {k}")
    if enabled and mig_devices is None:
        raise _GoError("missing required field 'mig-devices' when 'mig-enabled' is true")
    if not enabled and mig_devices:
        raise _GoError("MIG devices included when 'mig-enabled' is false")
    return ConfigEntry(devices, enabled, mig_devices, dfilter)


def _spec(data: Any) -> dict[str, list[ConfigEntry]] | None:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _GoError(_type_error(data, "map[string]json.RawMessage"))
    if "version" not in data and data:
        raise _GoError("unable to parse with missing 'version' field")
    version = data.get("version")
    if version is not None and not isinstance(version, str):
        raise _GoError(_type_error(version, "string"))
    if (version or "") != SPEC_VERSION:
        raise _GoError(f"unknown version: {version or ''}")
    configs: dict[str, list[ConfigEntry]] | None = None
    for k, v in data.items():
        if k == "version":
            continue
        if k != "mig-configs":
            raise _GoError(f"unexpected field: {k}")
        if v is None:
            v = {}
        if not isinstance(v, dict):
            raise _GoError(_type_error(v, "map[string]v1.MigConfigSpecSlice"))
        configs = {}
        for name, entries in v.items():
            if entries is None:
                entries = []
            if not isinstance(entries, list):
                raise _GoError(_type_error(entries, "v1.MigConfigSpecSlice"))
            configs[str(name)] = [_entry(x) for x in entries]
        if not configs:
            raise _GoError("at least one entry in 'mig-configs' is required")
        for name, lst in configs.items():
            if not lst:
                raise _GoError(f"at least one entry in '{name}' is required")
    return configs


def parse_config(text: str) -> dict[str, list[ConfigEntry]]:
    """Parse a mig-parted config as ``sigs.k8s.io/yaml`` + ``v1.Spec`` do. Raises :class:`SpecError`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise SpecError(f"unmarshal error: error converting YAML to JSON: yaml: {where}{problem}") from None
    try:
        configs = _spec(data)
    except _GoError as e:
        raise SpecError(f"unmarshal error: error unmarshaling JSON: while decoding JSON: {e}") from None
    return configs or {}


def select_config(configs: Mapping[str, list[ConfigEntry]], name: str) -> tuple[str, list[ConfigEntry]]:
    """``GetSelectedMigConfig``: ``name`` may be empty only when the file holds exactly one config."""
    if len(configs) > 1 and not name:
        raise SpecError("missing required flag 'selected-config' when more than one config available")
    if len(configs) == 1 and not name:
        name = next(iter(configs))
    if name not in configs:
        raise SpecError(f"selected mig-config not present: {name}")
    return name, configs[name]


# ----------------------------------------------------------------------------- writer


@dataclass(frozen=True)
class GpuTarget:
    """What one GPU should look like after the apply: MIG on with these instances, or MIG off."""

    index: int
    mig_enabled: bool
    mig_devices: Mapping[str, int] = field(default_factory=dict)


def render_config(name: str, targets: Sequence[GpuTarget]) -> str:
    """A ``version: v1`` config with one named config and one entry per GPU (index order)."""
    lines = [f"version: {SPEC_VERSION}", "mig-configs:", f"  {json.dumps(name)}:"]
    for t in sorted(targets, key=lambda t: t.index):
        lines.append(f"    - devices: [{t.index}]")
        lines.append(f"      mig-enabled: {'true' if t.mig_enabled else 'false'}")
        if t.mig_enabled:
            devs = {k: v for k, v in sorted(t.mig_devices.items()) if v > 0}
            if not devs:
                lines.append("      mig-devices: {}")
            else:
                lines.append("      mig-devices:")
                lines.extend(f"        {json.dumps(k)}: {v}" for k, v in devs.items())
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- runner


@dataclass(frozen=True)
class MigPartedResult:
    argv: tuple[str, ...]
    returncode: int | None  # None when killed after the timeout
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


class MigPartedError(Exception):
    """mig-parted failed, timed out or could not be started; ``reason`` is one line for people."""

    def __init__(self, reason: str, result: MigPartedResult | None = None) -> None:
        self.reason = reason
        self.result = result
        super().__init__(reason)


_FATAL_RE = re.compile(r'level=fatal msg="((?:[^"\\]|\\.)*)"')


def failure_message(result: MigPartedResult) -> str:
    """The fatal message mig-parted logged (logrus text format), else the last output line."""
    for text in (result.stderr, result.stdout):
        found = _FATAL_RE.findall(text)
        if found:
            return str(json.loads(f'"{found[-1]}"'))
    lines = [ln.strip() for ln in (result.stderr + "\n" + result.stdout).splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {result.returncode}"


class MigPartedRunner:
    """Runs ``nvidia-mig-parted`` (``command`` is the executable plus any fixed leading arguments)."""

    def __init__(self, command: Sequence[str], timeout_s: float = 120.0, env: Mapping[str, str] | None = None,
                 debug: bool = False) -> None:
        if not command:
            raise ValueError("mig-parted command is empty")
        self.command = tuple(command)
        self.timeout_s = timeout_s
        self.env = dict(env or {})
        self.debug = debug

    def run(self, args: Sequence[str], timeout_s: float | None = None) -> MigPartedResult:
        argv = (*self.command, *(("-d",) if self.debug else ()), *args)
        env = {**os.environ, **self.env}
        limit = self.timeout_s if timeout_s is None else timeout_s
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env, start_new_session=True)
        except OSError as e:
            raise MigPartedError(f"cannot run {argv[0]}: {e.strerror or e}") from e
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            return MigPartedResult(argv, None, out or "", err or "", time.monotonic() - t0, True)
        return MigPartedResult(argv, proc.returncode, out or "", err or "", time.monotonic() - t0)

    def apply(self, config_file: str, config_name: str) -> MigPartedResult:
        res = self.run(["apply", "-f", config_file, "-c", config_name])
        if res.timed_out:
            raise MigPartedError(f"nvidia-mig-parted apply timed out after {self.timeout_s:g}s and was killed", res)
        if res.returncode != 0:
            raise MigPartedError(f"nvidia-mig-parted apply failed (exit {res.returncode}): {failure_message(res)}",
                                 res)
        return res

    def assert_applied(self, config_file: str, config_name: str) -> MigPartedResult:
        res = self.run(["assert", "-f", config_file, "-c", config_name])
        if res.timed_out:
            raise MigPartedError(f"nvidia-mig-parted assert timed out after {self.timeout_s:g}s", res)
        if res.returncode != 0:
            raise MigPartedError(f"nvidia-mig-parted assert failed (exit {res.returncode}): {failure_message(res)}",
                                 res)
        return res


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
