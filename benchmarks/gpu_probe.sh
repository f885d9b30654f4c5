#!/usr/bin/env bash
# Short GPU figures (second call of session 7, after gpu_run.sh found the bf16 blur bug and ran
# out of time): pretraining step throughput per method from device memory and from pinned host
# memory, and fine-tuning trial throughput alone vs 16 processes sharing the GPU.
set -u
OUT=${OUT:-/tmp/gpu-probe-out}
. benchmarks/device_env.sh
S=${STEPS:-30}
BENCH="$SHIM; import runpy; sys.argv = ['gpu_bench.py', *sys.argv[1:]]; runpy.run_path('benchmarks/gpu_bench.py', run_name='__main__')"
$PY -c "$BENCH" --steps "$S" --warmup 5 --batch 256 --backbone resnet50 --methods seco \
    --sources memory --json "$OUT/gpu_bench.jsonl" 2>&1 | grep -v Warning
$PY -c "$BENCH" --steps "$S" --warmup 5 --batch 64 --backbone resnet18 --methods seco cscl dense \
    --sources memory host --json "$OUT/gpu_bench.jsonl" 2>&1 | grep -v Warning
for W in 1 16; do
    OUT_W=$(mktemp -d /tmp/ft-w$W.XXXX)
    N=$([ "$W" = 1 ] && echo "--fractions 1.0 --lrs 3e-3" || echo "--fractions 0.01 1.0 0.1 0.05 --lrs 1e-3 3e-3")
    $PY benchmarks/label_efficiency_device.py --bundle .devdata/label-efficiency-bundle.xz \
        --out "$OUT_W" --device "${DEVICE:-cuda}" --workers "$W" --inits random \
        --arch resnet18 $N --seeds 0 --modes linear full --mults 1.0 --max-steps "${FT_STEPS:-200}" \
        --eval-every 100 >"$OUT/finetune_w$W.log" 2>&1
    grep -E "plain loop|Error" "$OUT/finetune_w$W.log" | tail -2
    cp "$OUT_W/label_efficiency.json" "$OUT/finetune_w$W.json" 2>/dev/null
done
