#!/usr/bin/env bash
# The GPU check on a machine with no package registry: install the bundle that `make gpu-bundle` made here
# (benchmarks/gpu_bundle.py: the wheels the GPU image lacks and the CIFAR-10 copy) offline into PYTHON, then run
# benchmarks/gpu.sh on the bundle's data. What PYTHON already has is pinned at its installed version (a constraint
# per distribution), so the install only adds: torch and the rest of the image stay as they are, and a bundle that
# would need anything else fails here, naming it. prunekit itself runs from the checkout (PYTHONPATH), not installed.
#
#   bash benchmarks/gpu_offline.sh            # with gpu-bundle/ carried beside the working tree
#   DRY=1 bash benchmarks/gpu_offline.sh      # gpu.sh's toy run on the CPU (tests/test_gpu_bundle.py names this)
#
# Variables: BUNDLE (default gpu-bundle), PYTHON (default python3, the one that holds torch), and gpu.sh's own
# (OUT, DRY, STEPS, the recipe); DATA is the bundle's data folder.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUNDLE="$(cd "${BUNDLE:-gpu-bundle}" 2>/dev/null && pwd)" || BUNDLE=""
if [[ -z $BUNDLE || ! -f $BUNDLE/requirements.txt || ! -d $BUNDLE/wheels ]]; then
    echo "no GPU bundle at ${BUNDLE:-gpu-bundle}/: run \`make gpu-bundle\` where pip reaches a registry, and carry" \
        "gpu-bundle with the working tree" >&2
    exit 2
fi
PYTHON=${PYTHON:-python3}
pinned="$(mktemp)"
trap 'rm -f "$pinned"' EXIT
"$PYTHON" -m pip list --format=freeze | grep -E '^[A-Za-z0-9._-]+==' >"$pinned"
"$PYTHON" -m pip install --isolated --no-index --find-links "$BUNDLE/wheels" --constraint "$pinned" \
    --requirement "$BUNDLE/requirements.txt"  # --isolated: no PIP_* variable or user config adds another source
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="$PYTHON" DATA="$BUNDLE/data" bash benchmarks/gpu.sh
