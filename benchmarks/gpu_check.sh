#!/usr/bin/env bash
# The prepared GPU check: one call of a lent GPU machine (docs/benchmarks.md, "On a GPU").
#
#   OUT=/tmp/gpu-check bash benchmarks/gpu_check.sh [SECONDS]
#
# 1. One pretraining step of MoCo v2 and BYOL at the paper's scale (ResNet-50, 224 px, batch 256) in
#    fp32, bf16 and bf16 + channels_last (benchmarks/bench_pretrain.py, synthetic batches).
# 2. The default model (params.yaml) trained by benchmarks/cam_screen.py on the GPU for the default's
#    552 steps, for 10x that (model seeds 0 and 1) and 5x, exported to $OUT/moco-<tag>.pt; each is
#    evaluated afterwards on the CPU with `cam_screen.py --load`, so CPU and GPU models share one
#    evaluation.
# Runs stop at SECONDS (default 480) after the start; a run the deadline cuts leaves no file. The
# machine's python3 needs pycocotools: carry its wheel in .whl/ (the README of the device tool).
set -u
out=${OUT:?set OUT to the folder the results go to}
deadline=$((SECONDS + ${1:-480}))
export PYTHONPATH=src PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=src:/tmp/site
fi
log=$out/gpu_check.log
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
    nproc
} 2>&1 | tee "$log"

left() { echo $((deadline - SECONDS)); }

timeout 120 python3 benchmarks/bench_pretrain.py --device cuda --arch resnet50 --stem standard --size 224 \
    --batch 256 --methods moco byol --variants fp32,bf16,bf16-cl --no-lightly --warmup 3 --steps 5 --repeats 3 \
    2>&1 | tee -a "$log"

# tag, steps, model seed; in order of priority. Loader workers 6; 0 after a run that fails otherwise.
workers=6
for run in "steps552:552:0" "steps5520:5520:0" "steps5520-seed1:5520:1" "steps2760:2760:0"; do
    IFS=: read -r tag steps seed <<< "$run"
    [ "$(left)" -gt 20 ] || { echo "# deadline: $tag not run" | tee -a "$log"; continue; }
    set -o pipefail
    timeout "$(left)" python3 benchmarks/cam_screen.py --tag "default-gpu-$tag" --steps "$steps" --seed "$seed" \
        --set pretrain.workers=$workers --device cuda --keep "$out/moco-$tag.pt" --train-only 2>&1 | tee -a "$log"
    rc=$?
    set +o pipefail
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$workers" -ne 0 ]; then
        echo "# $tag failed (rc $rc) with $workers workers; the rest with 0" | tee -a "$log"
        workers=0
    fi
done
echo "# done at ${SECONDS} s" | tee -a "$log"
