#!/usr/bin/env bash
# Flotilla's kind + chaos-mesh suite. Needs docker, kind, kubectl, helm and
# network access (kind's node image, chaos-mesh's chart and images).
#
#   tests/e2e/kind/run.sh            # everything, then deletes the cluster
#   KEEP_CLUSTER=1 tests/e2e/kind/run.sh
#
# 1. builds the images (images/build.sh --with-e2e) and tags the node image
#    a second time for the upgrade; creates the kind cluster of
#    kind-config.yaml and loads the images;
# 2. installs chaos-mesh by its Helm chart (containerd runtime and socket)
#    and Flotilla by helm/flotilla (values-e2e.yaml);
# 3. applies examples/raftcluster.yaml (the node image set to the one built)
#    and examples/topic.yaml, and waits for the RaftCluster's Available;
# 4. chaos under load: a workload Job (flotilla-e2e workload) runs while
#    PodChaos kills the leader's pod and a random pod and NetworkChaos
#    partitions one pod and then the leader from its followers; each chaos
#    must reach AllInjected (and, when it has a duration, AllRecovered) and
#    the RaftCluster must be Available again; the Job's own checks
#    (linearizable history, no acknowledged write lost, members agree) must
#    pass;
# 5. scale 3 -> 5 -> 3 under load, then a rolling upgrade to the new image
#    tag under load, each with its own Job and the same checks.
# Leader recovery (pod-kill of the leader until the RaftCluster names a new
# leader and is Available) is printed.
set -euo pipefail
cd "$(dirname "$0")/../../.."

CLUSTER="${KIND_CLUSTER:-flotilla}"
NS=flotilla-e2e
TAG="${TAG:-e2e}"
NEW_TAG="${NEW_TAG:-e2e-next}"
CHAOS_MESH_VERSION="${CHAOS_MESH_VERSION:-2.7.2}"
LOAD_SECONDS="${LOAD_SECONDS:-240}"
here=tests/e2e/kind

log() { printf '\n== %s %s\n' "$(date -u +%H:%M:%S)" "$*"; }
fail() {
  echo "FAILED: $*" >&2
  kubectl -n "$NS" get raftcluster,pods,jobs -o wide >&2 || true
  exit 1
}
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || fail "$tool is not on PATH"
done

cleanup() {
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

log "images"
images/build.sh --tag "$TAG" --with-e2e
docker tag "flotilla/flotilla-node:$TAG" "flotilla/flotilla-node:$NEW_TAG"

log "kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config kind-config.yaml --wait 180s
fi
kubectl config use-context "kind-$CLUSTER"
kind load docker-image --name "$CLUSTER" \
  "flotilla/flotilla-node:$TAG" "flotilla/flotilla-node:$NEW_TAG" \
  "flotilla/flotilla-operator:$TAG" "flotilla/flotilla-e2e:$TAG"

log "chaos-mesh $CHAOS_MESH_VERSION"
helm repo add chaos-mesh https://charts.chaos-mesh.org >/dev/null 2>&1 || true
helm repo update chaos-mesh >/dev/null
helm upgrade --install chaos-mesh chaos-mesh/chaos-mesh \
  --namespace chaos-mesh --create-namespace --version "$CHAOS_MESH_VERSION" \
  --set chaosDaemon.runtime=containerd \
  --set chaosDaemon.socketPath=/run/containerd/containerd.sock \
  --set dashboard.create=false \
  --wait --timeout 10m

log "flotilla operator"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
helm upgrade --install flotilla helm/flotilla \
  --namespace flotilla-system --create-namespace \
  -f "$here/values-e2e.yaml" --set "image.tag=$TAG" \
  --wait --timeout 5m

log "RaftCluster demo and Topic orders"
sed "s|image: flotilla/flotilla-node:.*|image: flotilla/flotilla-node:$TAG|; s|imagePullPolicy: .*|imagePullPolicy: Never|" \
  examples/raftcluster.yaml |
  kubectl -n "$NS" apply -f -
kubectl -n "$NS" apply -f examples/topic.yaml

available() {
  kubectl -n "$NS" wait raftcluster/demo --for=condition=Available --timeout="${1:-300s}" >/dev/null
}
available 600s || fail "the RaftCluster never became Available"
leader() { kubectl -n "$NS" get raftcluster demo -o jsonpath='{.status.leader}'; }
ready_replicas() { kubectl -n "$NS" get raftcluster demo -o jsonpath='{.status.readyReplicas}'; }
echo "leader: $(leader)"

# start_job NAME SECONDS: the workload Job under load for SECONDS.
start_job() {
  sed "s|__NAME__|$1|; s|__IMAGE__|flotilla/flotilla-e2e:$TAG|; s|__DURATION__|$2|" \
    "$here/workload-job.yaml" | kubectl apply -f -
}
# finish_job NAME: waits for it, prints its log, fails if it failed.
finish_job() {
  local job="$1" waited=0
  while :; do
    if [ "$(kubectl -n "$NS" get job "$job" -o jsonpath='{.status.succeeded}')" = 1 ]; then break; fi
    if [ "$(kubectl -n "$NS" get job "$job" -o jsonpath='{.status.failed}')" = 1 ]; then
      kubectl -n "$NS" logs "job/$job" --tail=50 >&2 || true
      fail "workload $job failed its checks"
    fi
    sleep 5
    waited=$((waited + 5))
    [ "$waited" -lt 1800 ] || fail "workload $job did not finish"
  done
  kubectl -n "$NS" logs "job/$job" --tail=5
}

# chaos FILE: applies it (the leader's name for __LEADER__), waits for
# AllInjected, for AllRecovered when it has a duration, then for the
# RaftCluster's Available; deletes it. Prints how long recovery took.
chaos() {
  local file="$here/chaos/$1" kind name old start
  old="$(leader)"
  kind="$(awk '/^kind:/ {print $2}' "$file")"
  name="$(awk '/^  name:/ {print $2; exit}' "$file")"
  start=$(date +%s.%N)
  sed "s|__LEADER__|$old|g" "$file" | kubectl apply -f -
  kubectl -n "$NS" wait "$kind/$name" --for=condition=AllInjected --timeout=120s >/dev/null ||
    fail "$name was not injected"
  if grep -q '^  duration:' "$file"; then
    kubectl -n "$NS" wait "$kind/$name" --for=condition=AllRecovered --timeout=180s >/dev/null ||
      fail "$name did not recover"
  fi
  # The pod-kill hits at once: give the operator a status round first.
  sleep 5
  available 300s || fail "the RaftCluster was not Available again after $name"
  echo "$name: leader $old -> $(leader); Available again after $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
  kubectl -n "$NS" delete "$kind/$name" --wait=true >/dev/null
}

log "chaos under load"
start_job workload-chaos "$LOAD_SECONDS"
sleep 20
chaos pod-kill-leader.yaml
chaos pod-kill-random.yaml
chaos partition-one.yaml
chaos partition-leader.yaml
finish_job workload-chaos

log "scale 3 -> 5 -> 3 under load"
start_job workload-scale "$LOAD_SECONDS"
sleep 10
for n in 5 3; do
  kubectl -n "$NS" patch raftcluster demo --type merge -p "{\"spec\":{\"replicas\":$n}}"
  waited=0
  until [ "$(ready_replicas)" = "$n" ] && available 5s; do
    sleep 5
    waited=$((waited + 5))
    [ "$waited" -lt 600 ] || fail "scaling to $n did not finish"
  done
  echo "scaled to $n: $(kubectl -n "$NS" get pods -l app.kubernetes.io/instance=demo --no-headers | wc -l) pods"
done
finish_job workload-scale

log "rolling upgrade to flotilla/flotilla-node:$NEW_TAG under load"
start_job workload-upgrade "$LOAD_SECONDS"
sleep 10
kubectl -n "$NS" patch raftcluster demo --type merge \
  -p "{\"spec\":{\"image\":\"flotilla/flotilla-node:$NEW_TAG\"}}"
waited=0
until [ "$(kubectl -n "$NS" get pods -l app.kubernetes.io/instance=demo \
  -o jsonpath='{range .items[*]}{.spec.containers[0].image}{"\n"}{end}' | grep -c ":$NEW_TAG\$")" = 3 ] &&
  available 5s; do
  sleep 5
  waited=$((waited + 5))
  [ "$waited" -lt 900 ] || fail "the rolling upgrade did not finish"
done
echo "every pod runs flotilla/flotilla-node:$NEW_TAG; leader $(leader)"
finish_job workload-upgrade

log "passed"
