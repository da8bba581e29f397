"""YAML/JSON loading that remembers where each value came from (file and line), for error messages.

A key repeated in one mapping is an error (PyYAML keeps the last one silently, which hides typos
and merge mistakes); a ``.json`` file is parsed as strict JSON (a trailing comma is an error, as
every other JSON tool says), with YAML only used to find the line of each value.
"""

from __future__ import annotations

import json
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

    def non_negative_int(self, value: Any, path: str, what: str) -> int:
        """``value`` as a count (an integer >= 0, not a bool), else an error naming file:line."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"{what} must be an integer, got {value!r}", path)
        if value < 0:
            raise self.error(f"{what} must not be negative, got {value}", path)
        return value


def _walk(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
            _walk(v, f"{path}.{key}" if path else str(key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _walk(v, f"{path}[{i}]", lines)


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping states the same key twice."""


class StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses a key repeated in one mapping (naming both lines)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable key: SafeLoader reports it below
                break
            if first is not None:
                raise DuplicateKeyError(None, None, f"duplicate key {key!r} (first at line {first})",
                                        key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _yaml_error(e: yaml.YAMLError, source: str, what: str) -> ConfigError:
    mark = getattr(e, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    return ConfigError(f"not valid {what}: {getattr(e, 'problem', e)}", where)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _load_json(text: str, source: str) -> Located:
    try:
        data = json.loads(text, object_pairs_hook=_json_pairs)
    except json.JSONDecodeError as e:
        before = text[: e.pos].rstrip()
        trailing = before.endswith(",") and text[e.pos:e.pos + 1] in ("]", "}")
        hint = "; a trailing comma is not allowed in JSON" if trailing else ""
        raise ConfigError(f"not valid JSON: {e.msg} (column {e.colno}){hint}", f"{source}:{e.lineno}") from e
    except ValueError as e:  # a duplicate key: find its line through the YAML reader
        try:
            yaml.load(text, Loader=StrictLoader)
        except yaml.YAMLError as ye:
            raise _yaml_error(ye, source, "JSON") from e
        raise ConfigError(f"not valid JSON: {e}", source) from e
    lines: dict[str, int] = {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:  # valid JSON that YAML 1.1 refuses (rare): no line numbers
        node = None
    if node is not None:
        _walk(node, "", lines)
    return Located(data, lines, source)


def load_text(text: str, source: str) -> Located:
    """Parse ``text``: strict JSON when ``source`` ends in ``.json``, else YAML (duplicate keys refused)."""
    if source.lower().endswith(".json"):
        return _load_json(text, source)
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        raise _yaml_error(e, source, "YAML") from e
    finally:
        loader.dispose()
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
            text = fh.read()
    except OSError as e:
        raise ConfigError(f"cannot read file: {e.strerror}", path) from e
    if path.lower().endswith(".json"):
        docs: list[Any] = [_load_json(text, path).data]
    else:
        try:
            docs = list(yaml.load_all(text, Loader=StrictLoader))
        except yaml.YAMLError as e:
            raise _yaml_error(e, path, "YAML") from e
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
