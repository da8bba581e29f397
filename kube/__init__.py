"""dynamig.kube: the Kubernetes adapter shared by the extender and the device plugin.

- :class:`KubeStore`: :class:`models.store.ClusterStore` over the official client (list+watch caches,
  merge-patch annotation writes guarded by resourceVersion, the Binding subresource).
- :class:`LeaderElector`: leader election with a coordination.k8s.io/v1 Lease.
- The node lock is :mod:`models.nodelock` over any store (a KubeStore included).
"""

from .client import ApiError, GoneError, KubeClient
from .lease import LeaderElector, default_identity, micro_time, parse_micro_time
from .store import KubeStore, is_gpu_pod

__all__ = [
    "ApiError", "GoneError", "KubeClient", "KubeStore", "LeaderElector", "default_identity", "is_gpu_pod",
    "micro_time", "parse_micro_time",
]
