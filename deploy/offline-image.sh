#!/usr/bin/env bash
# Build the CPU image (or the Orthanc image of deploy/compose.offline.yml) on a
# machine that reaches only the package registries (PyPI, a Debian mirror), not a
# container registry. Nothing is fetched inside the build (--network=none).
#
#   deploy/offline-image.sh TAG              # the service, Dockerfile --target cpu
#   deploy/offline-image.sh --orthanc TAG    # Orthanc from Debian's orthanc and
#                                            # orthanc-dicomweb (deploy/orthanc/Containerfile)
#
# 1. The base image: BASE_IMAGE if set; else python:3.11-slim-bookworm (or, for
#    Orthanc, debian:bookworm-slim) when it is already there or can be pulled (PULL=1,
#    the default; PULL=0 skips trying); else a Debian bookworm root made with
#    debootstrap from MIRROR (Python 3.11 from Debian's own python3 and python3-venv;
#    for Orthanc, the packages orthanc and orthanc-dicomweb) and imported as an image.
#    The root's tarball is kept in CACHE/rootfs and reused.
# 2. The wheelhouse, made on the host with pip download: cp311 wheels for
#    manylinux up to glibc 2.36 (bookworm's) of the service's base install only (no
#    [train] extra, so no TensorFlow), kept in CACHE/wheels-<hash of pyproject.toml>.
# 3. The build, from a copy of the build context with the wheels in deploy/wheelhouse.
#
# Environment: ENGINE (default: podman if installed, else docker; may carry global
# options, e.g. "podman --runtime runc --cgroup-manager cgroupfs"), CACHE (default
# var/offline of the repository), MIRROR (default http://deb.debian.org/debian),
# BASE_IMAGE, PULL, PYTHON (the host's Python with pip; default python3).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
usage() { echo "usage: $0 [--orthanc] TAG" >&2; exit 2; }
what=lge
if [ "${1:-}" = "--orthanc" ]; then what=orthanc; shift; fi
[ $# -eq 1 ] || usage
TAG=$1

if [ -z "${ENGINE:-}" ]; then
    if command -v podman >/dev/null 2>&1; then ENGINE=podman; else ENGINE=docker; fi
fi
read -r -a engine <<<"$ENGINE"
CACHE=${CACHE:-$REPO/var/offline}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-python3}
PULL=${PULL:-1}
mkdir -p "$CACHE"
started=$(date +%s)
say() { echo "offline-image: [$(( $(date +%s) - started )) s] $*" >&2; }

image_exists() { "${engine[@]}" image inspect "$1" >/dev/null 2>&1; }

# A Debian bookworm root with the given packages, imported as an image; prints its name.
debootstrap_base() {
    local name=$1 include=$2 key tarball root
    key=$(printf 'bookworm minbase %s %s' "$include" "$MIRROR" | sha256sum | cut -c1-12)
    local image="localhost/dblge-base-$name:bookworm-$key"
    if image_exists "$image"; then echo "$image"; return; fi
    tarball="$CACHE/rootfs/bookworm-$name-$key.tar"
    if [ ! -f "$tarball" ]; then
        command -v debootstrap >/dev/null 2>&1 \
            || { echo "offline-image: no base image and no debootstrap (apt-get install debootstrap)" >&2; exit 1; }
        say "debootstrap bookworm ($include) from $MIRROR"
        mkdir -p "$CACHE/rootfs"
        root=$(mktemp -d "$CACHE/rootfs/root.XXXXXX")
        trap 'rm -rf "$root"' EXIT
        debootstrap --variant=minbase --include="$include" bookworm "$root" "$MIRROR" \
            > "$CACHE/rootfs/debootstrap-$name.log" 2>&1 \
            || { tail -n 30 "$CACHE/rootfs/debootstrap-$name.log" >&2; exit 1; }
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
               "$root"/var/log/* "$root"/tmp/*
        tar --numeric-owner --xattrs -C "$root" -cf "$tarball.part" .
        mv "$tarball.part" "$tarball"
        rm -rf "$root"
        trap - EXIT
    fi
    say "importing $tarball as $image"
    "${engine[@]}" import --change 'CMD ["/bin/bash"]' "$tarball" "$image" >/dev/null
    echo "$image"
}

# The base image: given, present, pulled, or made.
base_image() {
    local official=$1 name=$2 include=$3
    if [ -n "${BASE_IMAGE:-}" ]; then echo "$BASE_IMAGE"; return; fi
    if image_exists "$official"; then echo "$official"; return; fi
    if [ "$PULL" = 1 ] && timeout 120 "${engine[@]}" pull -q "$official" >/dev/null 2>&1; then
        echo "$official"; return
    fi
    say "$official is not here and cannot be pulled: a Debian base from debootstrap"
    debootstrap_base "$name" "$include"
}

build_flags=(--network=none)
if [ "$(basename "${engine[0]}")" = podman ]; then
    # Docker's format keeps HEALTHCHECK (OCI's drops it); layers are cached.
    build_flags+=(--format docker --layers)
fi

if [ "$what" = orthanc ]; then
    # debootstrap does not resolve virtual packages: orthanc's libboost-regex1.74.0-icu72
    # is provided by libboost-regex1.74.0, named here.
    base=$(base_image debian:bookworm-slim orthanc orthanc,orthanc-dicomweb,libboost-regex1.74.0)
    say "building $TAG on $base"
    "${engine[@]}" build "${build_flags[@]}" --build-arg "ORTHANC_BASE=$base" \
        -t "$TAG" "$REPO/deploy/orthanc"
    say "built $TAG"
    exit 0
fi

# ---- the wheelhouse, on the host ----------------------------------------------------
key=$(cat "$REPO/pyproject.toml" "$0" | sha256sum | cut -c1-12)
wheels="$CACHE/wheels-$key"
if [ ! -f "$wheels/.complete" ]; then
    say "making the wheelhouse $wheels"
    rm -rf "$wheels" && mkdir -p "$wheels"
    # The base dependencies only: the [train] and other extras are not read.
    "$PYTHON" - "$REPO/pyproject.toml" > "$wheels/requirements.txt" <<'EOF'
import sys
try:
    import tomllib
except ImportError:  # Python < 3.11: pip's own copy
    from pip._vendor import tomli as tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)
print("\n".join(project["project"]["dependencies"]))
print("\n".join(project["build-system"]["requires"]))
EOF
    # pip does not widen manylinux_2_36 to the older tags: every glibc up to bookworm's.
    platforms=(--platform manylinux2014_x86_64)
    for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
    "$PYTHON" -m pip download --quiet --dest "$wheels" --only-binary=:all: \
        --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
        "${platforms[@]}" -r "$wheels/requirements.txt"
    if ls "$wheels" | grep -Ei '^(tensorflow|keras|tf2onnx)' >&2; then
        echo "offline-image: TensorFlow in the wheelhouse" >&2; exit 1
    fi
    touch "$wheels/.complete"
fi
say "wheelhouse: $(ls "$wheels"/*.whl | wc -l) wheels, $(du -sh "$wheels" | cut -f1)"

base=$(base_image python:3.11-slim-bookworm python python3,python3-venv)
VERSION=$("$REPO/deploy/version.sh")
[ -n "$VERSION" ] || { echo "offline-image: no __version__ in service/__init__.py" >&2; exit 1; }

# ---- the build context: the repository's, with the wheels ---------------------------
context=$(mktemp -d "$CACHE/context.XXXXXX")
trap 'rm -rf "$context"' EXIT
(cd "$REPO" && cp -a Dockerfile .dockerignore pyproject.toml README.md service training \
    models deploy "$context/")
rm -rf "$context/deploy/wheelhouse" && mkdir -p "$context/deploy/wheelhouse"
cp -al "$wheels"/*.whl "$context/deploy/wheelhouse/" 2>/dev/null \
    || cp -a "$wheels"/*.whl "$context/deploy/wheelhouse/"

say "building $TAG (version $VERSION) on $base"
"${engine[@]}" build "${build_flags[@]}" --target cpu \
    --build-arg "BUILD_BASE=$base" --build-arg "CPU_BASE=$base" \
    --build-arg "VERSION=$VERSION" -t "$TAG" "$context"
size=$("${engine[@]}" image inspect -f '{{.Size}}' "$TAG")
say "built $TAG: $(( size / 1048576 )) MiB"
