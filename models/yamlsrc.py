"""YAML/JSON loading that remembers where each value came from (file and line), for error messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from .errors import ConfigError


@dataclass(frozen=True)
class Located:
    """A parsed document plus a map from path (``a.b[0].c``) to 1-based line number."""

    data: Any
    lines: dict[str, int]
    source: str

    def line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None

    def error(self, message: str, path: str) -> ConfigError:
        ln = self.line(path)
        where = f"{self.source}:{ln}" if ln else self.source
        return ConfigError(message, where, path)


def _walk(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
            _walk(v, f"{path}.{key}" if path else str(key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _walk(v, f"{path}[{i}]", lines)


def load_text(text: str, source: str) -> Located:
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"not valid YAML/JSON: {getattr(e, 'problem', e)}", where) from e
    lines: dict[str, int] = {}
    if node is not None:
        _walk(node, "", lines)
    return Located(data, lines, source)


def load_file(path: str) -> Located:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise ConfigError(f"cannot read file: {e.strerror}", path) from e
    return load_text(text, path)


def load_pod_manifests(path: str) -> list[dict[str, Any]]:
    """Pod manifests from a YAML file: one or many documents, ``kind: List``/``PodList`` items
    unpacked. Errors name the file, the line (YAML errors) and the document."""
    try:
        with open(path, encoding="utf-8") as fh:
            docs = list(yaml.safe_load_all(fh))
    except OSError as e:
        raise ConfigError(f"cannot read file: {e.strerror}", path) from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise ConfigError(f"not valid YAML: {getattr(e, 'problem', e)}", where) from e
    pods: list[dict[str, Any]] = []
    for i, d in enumerate(docs):
        if d is None:
            continue
        if not isinstance(d, dict):
            raise ConfigError("expected a Pod manifest or a List of Pods", path, f"document {i + 1}")
        is_list = str(d.get("kind", "")).endswith("List")
        items = d.get("items") if is_list else [d]
        for j, p in enumerate(items or []):
            where = f"document {i + 1}" + (f" items[{j}]" if is_list else "")
            if not isinstance(p, dict) or p.get("kind", "Pod") != "Pod":
                kind = p.get("kind") if isinstance(p, dict) else type(p).__name__
                raise ConfigError(f"expected kind Pod, got {kind!r}", path, where)
            if not (p.get("metadata") or {}).get("name"):
                raise ConfigError("Pod has no metadata.name", path, where)
            pods.append(p)
    return pods
