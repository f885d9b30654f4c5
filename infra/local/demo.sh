#!/usr/bin/env bash
# The embedded demo, as a user runs it: each stage is a Ray job on the local two-node cluster.
#   demo.sh [CONFIG]   (the stack must be up: infra/local/stack.sh up)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$EARTHLOOP_ROOT"
CONFIG="${1:-configs/demo.yaml}"
# Jobs run in a temporary copy of the working dir: relative paths resolve against the project.
RUNTIME_ENV="{\"env_vars\": {\"EARTHLOOP_ROOT\": \"$EARTHLOOP_ROOT\", \"RAY_AUTH_MODE\": \"$RAY_AUTH_MODE\", \"GDAL_CACHEMAX\": \"$GDAL_CACHEMAX\"}}"

submit() {
  echo "== ray job submit -- python $*"
  "$VENV/bin/ray" job submit --address "$RAY_ADDRESS_JOBS" --working-dir . \
    --runtime-env-json "$RUNTIME_ENV" -- python "$@"
}

submit jobs/ingest.py --config "$CONFIG"
submit jobs/pretrain.py --config "$CONFIG"
submit jobs/finetune.py --config "$CONFIG" \
  'finetune.inits=[{name: random}, {name: seco, run: demo-seco}]'

cat <<TXT

Demo finished. Where things are:
  chip index (Delta):        runs/demo/tables/chips
  pretraining runs (Delta):  runs/demo/tables/pretrain_runs, runs/demo/tables/pretrain_metrics
  checkpoints:               runs/demo/ray_results/
  exported backbone:         runs/demo/models/demo-seco/backbone.pt
  fine-tuning report:        runs/demo/reports/
  Ray dashboard:             $RAY_ADDRESS_JOBS
  Prometheus metrics:        http://127.0.0.1:$RAY_HEAD_METRICS_PORT/metrics (head), :$RAY_WORKER_METRICS_PORT (worker)
Stop the stack with: make stack-down
TXT
