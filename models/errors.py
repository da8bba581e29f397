"""One error hierarchy for the pure domain: every message says what is wrong and where."""

from __future__ import annotations


class DynamigError(Exception):
    """Base of every error raised by the domain model."""


class CatalogError(DynamigError):
    """An unknown GPU model or MIG profile."""


class LayoutError(DynamigError):
    """A MIG layout that the placement rules do not allow."""


class ConfigError(DynamigError):
    """A configuration file (device-config, nodeconfig, inventory) is invalid.

    ``source`` is the file, ``path`` the location inside it (``nvidia.knownMigGeometries[0]...``).
    """

    def __init__(self, message: str, source: str = "", path: str = "") -> None:
        self.source = source
        self.path = path
        where = ":".join(x for x in (source, path) if x)
        super().__init__(f"{where}: {message}" if where else message)


class RequestError(DynamigError):
    """A Pod whose GPU request is invalid (says which pod, container and field)."""


class CodecError(DynamigError):
    """An annotation that cannot be decoded (says which key and why)."""


class StoreError(DynamigError):
    """Base for cluster-store failures."""


class NotFound(StoreError):
    """The object does not exist."""


class Conflict(StoreError):
    """An optimistic-concurrency precondition (resourceVersion, UID, binding) failed."""
