"""Test fakes (a fake Kubernetes API server, ...)."""
