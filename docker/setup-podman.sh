#!/usr/bin/env bash
# A container engine for `kubetune run --local --container` and the image tests on a Debian
# machine without one (CI here): podman, runc and mmdebstrap from Debian's packages, and the
# engine settings a machine of this project's kind needs (docs/container.md): runc instead of
# crun (crun refuses its hybrid cgroups), cgroupfs instead of systemd, and rlimits within the
# ones the machine grants (raising them is not permitted there). Run as root.
set -euo pipefail
if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null || ! command -v runc >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc mmdebstrap >/dev/null
fi
mkdir -p /etc/containers
if [ ! -f /etc/containers/containers.conf ]; then
  cat > /etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
fi
podman --version
