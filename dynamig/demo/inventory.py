"""The demo's built-in cluster: MIG nodes of four models and hami-core nodes, 8 GPUs each."""

from __future__ import annotations

from models.config import Inventory, InventoryNode
from models.types import Applier, NodeMode

BUILTIN_NODES: tuple[tuple[str, NodeMode, str], ...] = (
    ("mig-a100-40g-0", NodeMode.MIG, "A100-SXM4-40GB"),
    ("mig-a100-80g-0", NodeMode.MIG, "A100-SXM4-80GB"),
    ("mig-h100-0", NodeMode.MIG, "H100-80GB"),
    ("mig-h200-0", NodeMode.MIG, "H200"),
    ("share-a100-80g-0", NodeMode.HAMI_CORE, "A100-SXM4-80GB"),
    ("share-h100-0", NodeMode.HAMI_CORE, "H100-80GB"),
)


def builtin_inventory(gpus_per_node: int = 8, applier: Applier = Applier.MIG_PARTED) -> Inventory:
    """``applier``: how the MIG nodes change layouts (hami-core nodes keep the default)."""
    return Inventory(
        tuple(
            InventoryNode(name, mode, ((model_name, gpus_per_node),), 96000, 393216, 10,
                          applier=applier if mode is NodeMode.MIG else Applier.MIG_PARTED)
            for name, mode, model_name in BUILTIN_NODES
        ),
        source="<built-in demo inventory>",
    )
