"""Layout application: one GPU to a new MIG layout through nvidia-mig-parted, then verified.

A config names every GPU of the node (the target with its new profile counts, every other GPU with
its current state) so that mig-parted skips the others and a full ``assert`` passes. One apply at a
time per node; the result is checked through the backend (mig-parted can exit 0 having created
nothing, HAMi #2131) and with ``assert``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping

from .backend import GpuBackend, GpuInfo
from .migparted import GpuTarget, MigPartedError, MigPartedRunner, SpecError, parse_config, render_config

log = logging.getLogger("dynamig.deviceplugin")


def describe_counts(counts: Mapping[str, int]) -> str:
    items = [f"{n}x {p}" for p, n in sorted(counts.items()) if n > 0]
    return "{" + ", ".join(items) + "}" if items else "no instance"


class LayoutApplier:
    def __init__(self, node: str, backend: GpuBackend, runner: MigPartedRunner, config_dir: str | None,
                 run_assert: bool = True) -> None:
        self.node = node
        self.run_assert = run_assert
        self.backend = backend
        self.runner = runner
        self.config_dir = config_dir  # None: a private temporary directory, made on first use
        self._owned_dir: str | None = None
        self._lock = threading.Lock()
        self._seq = 0
        self.last_config: str | None = None  # the text of the last config written (tests, debugging)
        self.last_config_path: str | None = None
        self.applies = 0

    def _dir(self) -> str:
        if self.config_dir is not None:
            os.makedirs(self.config_dir, exist_ok=True)
            return self.config_dir
        if self._owned_dir is None:
            self._owned_dir = tempfile.mkdtemp(prefix=f"dynamig-mig-parted-{self.node}-")
        return self._owned_dir

    def close(self) -> None:
        """Remove the private config directory, if one was made."""
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None

    def config_for(self, index: int, counts: Mapping[str, int], gpus: tuple[GpuInfo, ...], name: str) -> str:
        targets = []
        for g in gpus:
            if g.index == index:
                targets.append(GpuTarget(g.index, True, dict(counts)))
            elif g.mig_capable and g.mig_enabled:
                targets.append(GpuTarget(g.index, True, g.profile_counts()))
            else:
                targets.append(GpuTarget(g.index, False))
        return render_config(name, targets)

    def apply(self, index: int, counts: Mapping[str, int]) -> GpuInfo:
        """Re-partition GPU ``index`` to ``counts``; the new GPU state. Raises :class:`MigPartedError`.

        The caller has checked that the GPU is idle."""
        want = {p: n for p, n in counts.items() if n > 0}
        with self._lock:
            gpus = self.backend.gpus()
            self._seq += 1
            name = f"dynamig-{self.node}-{self._seq}"
            text = self.config_for(index, want, gpus, name)
            try:
                parse_config(text)  # our own writer must produce what mig-parted accepts
            except SpecError as e:  # pragma: no cover - a bug in render_config
                raise MigPartedError(f"internal error: generated mig-parted config is invalid: {e}") from e
            path = os.path.join(self._dir(), f"mig-parted-{self.node}.yaml")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            self.last_config, self.last_config_path = text, path
            self.applies += 1
            log.info("node %s: applying %s to GPU %d with %s", self.node, describe_counts(want), index,
                     " ".join(self.runner.command))
            res = self.runner.apply(path, name)
            log.info("node %s: mig-parted apply done in %.2fs", self.node, res.seconds)
            after = {g.index: g for g in self.backend.gpus()}
            g = after.get(index)
            if g is None:
                raise MigPartedError(f"GPU {index} disappeared after nvidia-mig-parted apply")
            if not g.mig_enabled or g.profile_counts() != want:
                have = describe_counts(g.profile_counts()) if g.mig_enabled else "MIG disabled"
                raise MigPartedError(f"nvidia-mig-parted apply exited 0 but GPU {index} has {have} "
                                     f"instead of {describe_counts(want)}")
            if self.run_assert:
                self.runner.assert_applied(path, name)
            return g
