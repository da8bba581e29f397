# syntax=docker/dockerfile:1
#
# One image for both dynamig services: the scheduler extender (`dynamig extender`) and the node
# device plugin (`dynamig deviceplugin`), plus NVIDIA's nvidia-mig-parted, which the device plugin
# runs to change MIG layouts.
#
#   docker build -t <registry>/dynamig:0.1.0 .
#   docker build --build-arg MIG_PARTED_VERSION=v0.14.5 -t <registry>/dynamig:0.1.0 .
#
# Both stages use Debian bookworm, so the cgo-built mig-parted binary finds the glibc it was linked
# against. The image runs as the unprivileged user 10001; the Helm chart runs the device plugin as
# root (the kubelet's device-plugin directory is root's) and privileged (mig-parted needs it).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG GO_IMAGE=golang:1.26-bookworm

# ---------------------------------------------------------------------------- nvidia-mig-parted
FROM ${GO_IMAGE} AS mig-parted
# A tag of github.com/NVIDIA/mig-parted (v0.12.3 or later knows the RTX PRO 6000, HAMi #2131).
ARG MIG_PARTED_VERSION=v0.14.5
# go-nvml loads libnvidia-ml through cgo; a newer Go toolchain is fetched if go.mod asks for one.
ENV CGO_ENABLED=1 GOTOOLCHAIN=auto GOFLAGS=-trimpath
RUN git clone --depth 1 --branch "${MIG_PARTED_VERSION}" https://github.com/NVIDIA/mig-parted.git /src/mig-parted
WORKDIR /src/mig-parted
RUN go build -ldflags "-s -w" -o /out/nvidia-mig-parted ./cmd/nvidia-mig-parted \
 && /out/nvidia-mig-parted --version

# ---------------------------------------------------------------------------- dynamig wheel
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}
ARG MIG_PARTED_VERSION=v0.14.5
LABEL org.opencontainers.image.title="dynamig" \
      org.opencontainers.image.description="dynamig scheduler extender and MIG device plugin" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.dynamig.mig-parted.version="${MIG_PARTED_VERSION}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Make the NVIDIA runtime inject NVML (libnvidia-ml) and nvidia-smi; the chart sets these too.
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=utility

COPY --from=mig-parted /out/nvidia-mig-parted /usr/local/bin/nvidia-mig-parted
COPY --from=wheel /wheels /tmp/wheels
RUN pip install /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && groupadd --system --gid 10001 dynamig \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin dynamig \
 && dynamig --help >/dev/null \
 && nvidia-mig-parted --version

USER 10001:10001
WORKDIR /tmp
CMD ["dynamig", "--help"]
