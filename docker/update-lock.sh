#!/usr/bin/env bash
# Move the lock forward: resolve the project's ranges anew in a fresh virtualenv, check the
# result, and write it to constraints.txt; the torch release is the first argument (default:
# the lock's own) and is written into both Dockerfiles, README.md's commands and .ci/run.
# Then run the tests (README.md's second command): they are what the new lock is tested by.
#   bash docker/update-lock.sh [TORCH_VERSION]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
lock=$repo/constraints.txt
old=$(sed -n 's/^torch==//p' "$lock")
torch=${1:-$old}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --upgrade pip
"$tmp/venv/bin/pip" install --quiet "torch==$torch"
"$tmp/venv/bin/pip" install --quiet "$repo[dev]"
"$tmp/venv/bin/pip" check
{
  sed -n '/^#/p' "$lock"
  "$tmp/venv/bin/pip" freeze --exclude kubetune | sed -E 's/^(torch==[^+]*)\+.*/\1/'
} > "$tmp/constraints.txt"
mv "$tmp/constraints.txt" "$lock"
sed -i "s/^ARG TORCH_VERSION=.*/ARG TORCH_VERSION=$torch/" "$repo/docker/Dockerfile" "$repo/docker/Dockerfile.cpu"
sed -i "s/torch==$old/torch==$torch/g" "$repo/README.md" "$repo/.ci/run"
"$tmp/venv/bin/python" -m pytest -q -p no:cacheprovider "$repo/tests/project/test_lock.py"
echo "constraints.txt: $(grep -c '==' "$lock") packages, torch $torch; now run the tests (README.md)"
