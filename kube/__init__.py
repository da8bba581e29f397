"""dynamig: kube."""
