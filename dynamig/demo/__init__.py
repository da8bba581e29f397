"""The all-in-one demo (``dynamig demo``, ``make run``): the real extender over loopback HTTP, one
real gRPC device plugin per node with simulated GPUs and a simulated ``nvidia-mig-parted``, and
stand-ins for kube-scheduler and the kubelet. Only the cluster and the GPUs are simulated."""
