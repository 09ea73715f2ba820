#!/usr/bin/env bash
# Builds the images flotilla-node and flotilla-operator from this checkout.
#
#   images/build.sh [--tag TAG] [--prefix PREFIX] [--base IMAGE] [--profile P]
#                   [--no-cargo] [--with-e2e]
#
# cargo builds the binaries on this machine (release profile by default); each image's Dockerfile
# (node/server/Dockerfile, operator/Dockerfile) then packages them with
# `--target packaged`, from local files only:
#   --base scratch (default): the image holds the binaries, the shared
#       libraries `ldd` lists for them, /etc/passwd and /etc/group naming
#       the user 65532, /tmp, and the node's data folder. Nothing is pulled,
#       so this works where no registry can be reached.
#   --base gcr.io/distroless/cc-debian12:nonroot (or another glibc image):
#       only the binaries; the base brings glibc and libgcc. The binaries'
#       glibc must not be newer than the base's (build on Debian 12).
# Images: ${PREFIX}flotilla-node:${TAG} and ${PREFIX}flotilla-operator:${TAG}
# (defaults: prefix "flotilla/", as the Helm chart and examples/ name them;
# tag "0.1.0", the chart's appVersion). --no-cargo packages the binaries
# already in the target folder. --profile dev packages the dev profile's
# binaries (debug assertions on; what CI here builds for its tests anyway)
# instead of release. --with-e2e also builds ${PREFIX}flotilla-e2e:${TAG}
# (tests/e2e/Dockerfile: the kind suite's workload Job). Prints the image
# names at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=0.1.0
prefix=flotilla/
base=scratch
cargo_build=1
with_e2e=0
profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --prefix) prefix="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    --no-cargo) cargo_build=0; shift ;;
    --with-e2e) with_e2e=1; shift ;;
    --profile) profile="$2"; shift 2 ;;
    -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "images/build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

case "$profile" in
  dev) out_dir=debug ;;
  release) out_dir=release ;;
  *) echo "images/build.sh: --profile must be dev or release" >&2; exit 2 ;;
esac
bindir="${CARGO_TARGET_DIR:-target}/$out_dir"
if [ "$cargo_build" = 1 ]; then
  cargo build --profile "$profile" --locked \
    -p flotilla-node --bin flotilla-node --bin flotilla \
    -p flotilla-operator --bin flotilla-operator
  if [ "$with_e2e" = 1 ]; then
    cargo build --profile "$profile" --locked -p flotilla-e2e --bin flotilla-e2e
  fi
fi
bins="flotilla-node flotilla flotilla-operator"
if [ "$with_e2e" = 1 ]; then bins="$bins flotilla-e2e"; fi
for bin in $bins; do
  if [ ! -x "$bindir/$bin" ]; then
    echo "images/build.sh: $bindir/$bin is missing (run without --no-cargo)" >&2
    exit 1
  fi
done

stage=images/.stage
rm -rf "$stage"

# stage_root DIR BINARY...: DIR/root gets the binaries (debug info
# stripped, symbols kept for backtraces) and, on scratch, what they need.
stage_root() {
  local root="$1/root"
  shift
  mkdir -p "$root/usr/local/bin"
  local bin
  for bin in "$@"; do
    cp "$bindir/$bin" "$root/usr/local/bin/$bin"
    strip --strip-debug "$root/usr/local/bin/$bin"
    chmod 0755 "$root/usr/local/bin/$bin"
  done
  if [ "$base" != scratch ]; then
    return
  fi
  # Every absolute path ldd prints: the libraries and the dynamic loader.
  local lib
  for bin in "$@"; do
    ldd "$bindir/$bin" | grep -o '/[^ ]*'
  done | sort -u | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  mkdir -p "$root/etc"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
  # Name lookups: files, then DNS (glibc's own, no NSS modules needed).
  printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
  mkdir -p "$root/tmp"
  chmod 1777 "$root/tmp"
}

stage_root "$stage/node" flotilla-node flotilla
mkdir -p "$stage/node/data"
stage_root "$stage/operator" flotilla-operator
if [ "$with_e2e" = 1 ]; then stage_root "$stage/e2e" flotilla-e2e; fi

node_image="${prefix}flotilla-node:${tag}"
operator_image="${prefix}flotilla-operator:${tag}"
# The classic builder, which builds only the stages up to --target.
export DOCKER_BUILDKIT=0
docker build --quiet --target packaged --build-arg "BASE=$base" \
  -f node/server/Dockerfile -t "$node_image" . >/dev/null
docker build --quiet --target packaged --build-arg "BASE=$base" \
  -f operator/Dockerfile -t "$operator_image" . >/dev/null

# Smoke: both start, as their numeric user, and know their version.
docker run --rm "$node_image" --version >&2
docker run --rm --entrypoint /usr/local/bin/flotilla "$node_image" --version >&2
docker run --rm "$operator_image" --version >&2
images="$node_image $operator_image"
if [ "$with_e2e" = 1 ]; then
  e2e_image="${prefix}flotilla-e2e:${tag}"
  docker build --quiet --target packaged --build-arg "BASE=$base" \
    -f tests/e2e/Dockerfile -t "$e2e_image" . >/dev/null
  docker run --rm "$e2e_image" --help >/dev/null
  images="$images $e2e_image"
fi
for image in $images; do
  docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$image" >&2
  echo "$image"
done
