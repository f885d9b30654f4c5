#!/usr/bin/env bash
# The one prepared run for a lent GPU (docs/benchmarks.md "GPU"; docs/label-efficiency.md
# "The GPU run of protocol v1"). A lent machine has torch and CUDA but not the storage stack,
# and cannot reach the chips, so it runs from a bundle made here beforehand:
#
#   .venv/bin/python benchmarks/label_efficiency.py --config configs/label-efficiency.yaml \
#       --out runs/label-efficiency/bundle --bundle-out .devdata/label-efficiency-bundle.xz
#   # pydantic and its needs as cp312 wheels in .whl/ (docs/benchmarks.md says which)
#   OUT=... bash benchmarks/gpu_run.sh        # on the GPU machine, .devdata and .whl carried
#
# 1. compute ceiling: SeCo ResNet-50, bf16, batches already on the GPU (gpu_bench.py);
# 2. smoke: every phase of the label-efficiency runner at a tiny budget (stops here on error);
# 3. the protocol's GPU run, time-boxed by BUDGET_S: no fine-tuning trial starts after the
#    deadline, and cells it cuts are reported, not scored.
# GPU utilisation is sampled every 0.5 s throughout (gpu_util.csv). DEVICE=cpu DRY=1 runs the
# same steps at toy budgets on a machine without a GPU (how this script is tested).
set -u
T0=$(date +%s)
OUT=${OUT:-/tmp/gpu-run-out}
BUDGET_S=${BUDGET_S:-540}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-16}
BUNDLE=${BUNDLE:-.devdata/label-efficiency-bundle.xz}
. benchmarks/device_env.sh

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader \
        -lms 500 >"$OUT/gpu_util.csv" &
fi
echo "phase start $(($(date +%s) - T0)) s: gpu_bench"

if [ "${DRY:-0}" = 1 ]; then
    BENCH=(--steps 2 --warmup 1 --batch 4 --backbone resnet_tiny --source memory)
    MAIN=(--arch resnet_tiny --pretrain-steps 4 --pretrain-batch 8 --cscl-steps 2 --cscl-batch 4
        --fractions 0.01 1.0 --seeds 0 --lrs 3e-3 --mults 1.0 --max-steps 6 --eval-every 3)
else
    BENCH=(--steps 50 --warmup 10 --batch 256 --backbone resnet50 --source memory)
    # the GPU run's budgets, fixed in docs/label-efficiency.md before it ran
    MAIN=(--arch resnet18 --pretrain-steps 3000 --pretrain-batch 64 --cscl-steps 1000
        --fractions 0.01 1.0 0.1 0.05 --seeds 0 1 2 --modes linear full
        --lrs 1e-3 3e-3 1e-2 --mults 1.0 --max-steps 600 --eval-every 50)
fi
$PY -c "$SHIM; import runpy; sys.argv = ['gpu_bench.py', *sys.argv[1:]]; runpy.run_path('benchmarks/gpu_bench.py', run_name='__main__')" \
    "${BENCH[@]}" 2>&1 | tee "$OUT/gpu_bench.txt"

echo "phase start $(($(date +%s) - T0)) s: smoke"
if ! $PY benchmarks/label_efficiency_device.py --bundle "$BUNDLE" --out "$(mktemp -d /tmp/le-smoke.XXXX)" \
    --device "$DEVICE" --workers 4 --arch resnet18 --pretrain-steps 10 --pretrain-batch 16 \
    --cscl-steps 3 --fractions 0.01 --seeds 0 --lrs 3e-3 --mults 1.0 --max-steps 10 \
    --eval-every 5 pretrain.lr_scaling=none pretrain.key_momentum=0.99 >"$OUT/smoke.log" 2>&1; then
    echo "smoke run failed: the full run is not started"
    tail -60 "$OUT/smoke.log"
    exit 3
fi
tail -3 "$OUT/smoke.log"

LE_OUT=${LE_OUT:-$(mktemp -d /tmp/le-gpu.XXXX)}  # a re-run into it would resume (label_efficiency.py)
START=$(($(date +%s) - T0))
echo "phase start $START s: label efficiency"
# a trial starts only if the longest so far would end by the deadline; then the summary
DEADLINE=$((BUDGET_S - START - 30))
$PY benchmarks/label_efficiency_device.py --bundle "$BUNDLE" --out "$LE_OUT" \
    --device "$DEVICE" --workers "$WORKERS" --deadline-s "$DEADLINE" "${MAIN[@]}" \
    pretrain.lr_scaling=none pretrain.key_momentum=0.99 >"$OUT/run.log" 2>&1
rc=$?
echo "phase end $(($(date +%s) - T0)) s: label efficiency rc=$rc"
grep -E "pretraining|fine-tuning:|deadline|trials/s|Error|error" "$OUT/run.log" | tail -40
cp "$LE_OUT"/label_efficiency.json "$LE_OUT"/label_efficiency.md "$LE_OUT"/*.png "$OUT/" 2>/dev/null
exit $rc
