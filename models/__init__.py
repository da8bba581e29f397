"""dynamig.models: the pure domain (catalog, layouts, templates, state, requests, plans, validator,
config loading, annotation codecs, the in-memory ClusterStore). No I/O frameworks live here."""

from .catalog import CATALOG, GpuModel, MigProfile, match_nvml_name, model
from .cluster import state_from_inventory, state_from_objects
from .config import (
    Inventory,
    builtin_device_config,
    builtin_device_config_document,
    load_device_config,
    load_inventory,
)
from .errors import (
    CatalogError,
    CodecError,
    ConfigError,
    Conflict,
    DynamigError,
    LayoutError,
    NotFound,
    RequestError,
    StoreError,
)
from .layouts import Layout, Slot, enumerate_layouts, make_layout, realize
from .plan import LayoutChange, Plan, PodPlacement, StageResult, UnitAssignment, apply_plan, release_pod
from .requests import ContainerRequest, PodRequest, parse_pod
from .store import ClusterStore, InMemoryStore
from .templates import DeviceConfig, Geometry, MigTemplate, ModelGeometries
from .types import ClusterState, Gpu, HostUsage, MigInstance, Node, NodeMode, ShareUsage, UnitKind
from .validate import Violation, validate

__all__ = [
    "CATALOG", "CatalogError", "ClusterState", "ClusterStore", "CodecError", "ConfigError", "Conflict",
    "ContainerRequest", "DeviceConfig", "DynamigError", "Geometry", "Gpu", "GpuModel", "HostUsage", "InMemoryStore",
    "Inventory", "Layout", "LayoutChange", "LayoutError", "MigInstance", "MigProfile", "MigTemplate",
    "ModelGeometries", "Node", "NodeMode", "NotFound", "Plan", "PodPlacement", "PodRequest", "RequestError",
    "ShareUsage", "Slot", "StageResult", "StoreError", "UnitAssignment", "UnitKind", "Violation", "apply_plan",
    "builtin_device_config", "builtin_device_config_document", "enumerate_layouts", "load_device_config",
    "load_inventory", "make_layout", "match_nvml_name", "model", "parse_pod", "realize", "release_pod",
    "state_from_inventory", "state_from_objects", "validate",
]
