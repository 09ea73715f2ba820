#!/usr/bin/env bash
# The kind suite's static checks, for CI where Kubernetes cannot run:
# every YAML of the suite (and the examples, kind-config.yaml, the chart's
# values and the workflows) parses; chaos manifests carry the fields
# chaos-mesh requires; `helm template` renders the chart with the suite's
# values; shellcheck passes on the suite's and the images' scripts.
#   tests/e2e/kind/static-checks.sh   (uses helm/tools.sh for helm; needs shellcheck)
set -euo pipefail
cd "$(dirname "$0")/../../.."
tools="$(bash helm/tools.sh)"

# PyYAML in a venv of its own, beside the chart tools.
venv="$tools/e2e-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check pyyaml==6.0.2 >&2
fi
mapfile -t yamls < <(
  git ls-files --cached --others --exclude-standard -- \
    'tests/e2e/kind/*.yaml' 'tests/e2e/kind/chaos/*.yaml' 'examples/*.yaml' \
    kind-config.yaml helm/flotilla/values.yaml helm/flotilla/Chart.yaml \
    '.github/workflows/*.yml'
)
"$venv/bin/python" tests/e2e/kind/check_manifests.py "${yamls[@]}"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$tools/helm/helm" lint --strict helm/flotilla -f tests/e2e/kind/values-e2e.yaml
"$tools/helm/helm" template flotilla helm/flotilla --namespace flotilla-system \
  --include-crds -f tests/e2e/kind/values-e2e.yaml --set image.tag=e2e > "$out/chart.yaml"
# The rendered chart is valid YAML and runs the image the suite loads.
"$venv/bin/python" tests/e2e/kind/check_manifests.py "$out/chart.yaml"
grep -q 'image: "\?flotilla/flotilla-operator:e2e"\?' "$out/chart.yaml" ||
  { echo "the chart does not render the e2e operator image" >&2; exit 1; }
"$tools/venv/bin/kubernetes-validate" --strict --quiet -k 1.33.0 "$out/chart.yaml" \
  tests/e2e/kind/workload-job.yaml
echo "ok: helm template renders with tests/e2e/kind/values-e2e.yaml and validates"

shellcheck tests/e2e/kind/run.sh tests/e2e/kind/static-checks.sh images/build.sh
echo "ok: shellcheck"
