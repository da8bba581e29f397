"""Kubernetes credentials for the services (``extender``, ``deviceplugin`` with ``--store kube``):
a missing or unreadable config is a user error with one line, not a traceback."""

from __future__ import annotations

import os
from typing import Any

from models.errors import ConfigError


def kube_client(kubeconfig: str | None) -> Any:
    """``kube.KubeClient.from_environment``: in-cluster service account, else the kubeconfig."""
    from kube import KubeClient

    try:
        return KubeClient.from_environment(kubeconfig)
    except Exception as e:  # kubernetes.config.ConfigException, OSError, YAML errors
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        text = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"no Kubernetes credentials: not in a pod with a service account, and the kubeconfig "
                          f"cannot be used ({text}); pass --kubeconfig FILE, or --store memory", where) from None
