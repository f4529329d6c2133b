#!/usr/bin/env bash
# What `pnpm test` needs beyond Node: PyTorch from Debian for the training tool's smoke test
# (packages/model/test/train-smoke.test.ts runs /usr/bin/python3), with OpenBLAS (without it torch is ~30x slower).
# Idempotent: does nothing when both are there. Installs with apt-get, through sudo when not root.
set -euo pipefail

PYTHON=/usr/bin/python3
PACKAGES=(python3-torch libopenblas0-pthread)

# Builtins and absolute paths only, so the no-op case needs nothing on PATH (the front-door test checks that).
ready() {
  "$PYTHON" -c 'import torch' >/dev/null 2>&1 && [[ "$(/sbin/ldconfig -p 2>/dev/null)" == *libopenblas* ]]
}

if ready; then
  echo "setup-test-env: PyTorch ($PYTHON) and OpenBLAS are already installed"
  exit 0
fi

fail() {
  echo "setup-test-env: $1; install ${PACKAGES[*]} (Debian) so that $PYTHON -c 'import torch' works" >&2
  exit 1
}

command -v apt-get >/dev/null 2>&1 || fail "apt-get not found on PATH=$PATH"
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || fail "not root and sudo not found on PATH=$PATH"
  as_root=(sudo)
fi

echo "setup-test-env: installing ${PACKAGES[*]} with apt-get"
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
ready || fail "after apt-get install, $PYTHON -c 'import torch' still fails or libopenblas is not in /sbin/ldconfig -p"
echo 'setup-test-env: done'
