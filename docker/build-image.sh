#!/usr/bin/env bash
# Build a kubetune image with podman or docker from the Dockerfiles' build arguments alone
# (docs/container.md). Usage, from anywhere:
#   docker/build-image.sh cpu|gpu TAG
# Optional environment:
#   BASE_IMAGE       the base image (default: the Dockerfile's public python:3.11 image)
#   DEBIAN_BASE=1    make the base from Debian's packages with mmdebstrap instead (for machines
#                    that reach a package mirror but no image registry; kept and reused once
#                    made); BASE_IMAGE names it
#   TORCH_INDEX_URL  passed on when set (empty: pip's default index)
#   PIP_FIND_LINKS   a folder of wheels, mounted into the build and passed on when set
# A CA bundle and a pip configuration of this machine (/etc/ssl/certs/ca-certificates.crt,
# /etc/pip.conf) are mounted into the build when present, so pip works behind the same proxy.
set -euo pipefail
flavour=${1:?usage: build-image.sh cpu|gpu TAG}
tag=${2:?usage: build-image.sh cpu|gpu TAG}
repo=$(cd "$(dirname "$0")/.." && pwd)
case $flavour in
  cpu) dockerfile=$repo/docker/Dockerfile.cpu ;;
  gpu) dockerfile=$repo/docker/Dockerfile ;;
  *) echo "error: build-image.sh: flavour must be cpu or gpu, not '$flavour'" >&2; exit 2 ;;
esac
engine=$(command -v podman || command -v docker || true)
if [ -z "$engine" ]; then
  echo "error: build-image.sh: neither podman nor docker is installed" >&2; exit 2
fi

args=(build --network host -f "$dockerfile" -t "$tag")
if [ "${DEBIAN_BASE:-}" = 1 ]; then
  BASE_IMAGE=${BASE_IMAGE:-localhost/kubetune-base:bookworm}
fi
# An existing Debian base is reused, so the layers built on it stay cached (remove it to refresh).
if [ "${DEBIAN_BASE:-}" = 1 ] && ! "$engine" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  rootfs=$(mktemp -d)/rootfs.tar
  mmdebstrap --quiet --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates bookworm "$rootfs"
  "$engine" import --change 'CMD ["/bin/bash"]' "$rootfs" "$BASE_IMAGE" >/dev/null
  rm -rf "$(dirname "$rootfs")"
fi
if [ -n "${BASE_IMAGE:-}" ]; then args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE"); fi
if [ -n "${TORCH_INDEX_URL+set}" ]; then args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL"); fi
# Mounts into a build are podman's (docker build has none: there, leave these unset).
if [ -n "${PIP_FIND_LINKS:-}" ]; then
  args+=(--build-arg "PIP_FIND_LINKS=$PIP_FIND_LINKS" -v "$PIP_FIND_LINKS:$PIP_FIND_LINKS:ro")
fi
if [ "$(basename "$engine")" = podman ]; then
  for file in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf; do
    if [ -f "$file" ]; then args+=(-v "$file:$file:ro"); fi
  done
fi
exec "$engine" "${args[@]}" "$repo"
