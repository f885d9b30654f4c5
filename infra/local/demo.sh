#!/usr/bin/env bash
# The embedded demo, as a user runs it: each stage is a Ray job on the local two-node cluster.
#   demo.sh [CONFIG]   (the stack must be up: infra/local/stack.sh up)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$EARTHLOOP_ROOT"
CONFIG="${1:-configs/demo.yaml}"
# Jobs run in a temporary copy of the working dir: relative paths resolve against the project.
# Label Studio: its URL, the *path* of the token file and the previews' document root; never the
# token itself (it would show in the job's runtime env on the dashboard).
RUNTIME_ENV="{\"env_vars\": {\"EARTHLOOP_ROOT\": \"$EARTHLOOP_ROOT\", \"RAY_AUTH_MODE\": \"$RAY_AUTH_MODE\", \"GDAL_CACHEMAX\": \"$GDAL_CACHEMAX\", \"LABEL_STUDIO_URL\": \"$LABEL_STUDIO_URL\", \"LABEL_STUDIO_TOKEN_PATH\": \"$LABEL_STUDIO_TOKEN_PATH\", \"LS_FILES_ROOT\": \"$LS_FILES_ROOT\"}}"
# The demo's task model for active learning: the SeCo-initialised segmentation model at the largest
# label fraction (the best validation score among its seeds). Not the best score over all cells:
# the 40-step demo sweep's validation scores are noisy, and the model trained on the most labels
# from the pretrained encoder is the one a user would deploy.
AL_INIT="${AL_INIT:-seco}"

submit() {
  echo "== ray job submit -- python $*"
  "$VENV/bin/ray" job submit --address "$RAY_ADDRESS_JOBS" --working-dir . \
    --runtime-env-json "$RUNTIME_ENV" -- python "$@"
}

# regenerated data (another preset or seed) would leave the old chip index pointing at new pixels
"$VENV/bin/python" infra/local/demo_workdir.py "$CONFIG"
submit jobs/ingest.py --config "$CONFIG"
submit jobs/pretrain.py --config "$CONFIG"
submit jobs/finetune.py --config "$CONFIG" \
  'finetune.inits=[{name: random}, {name: seco, run: demo-seco}]'
# One active-learning round: embed the index with the task model, select, push to Label Studio.
if "$(dirname "$0")/labelstudio.sh" status >/dev/null 2>&1; then
  submit jobs/active_learning.py --config "$CONFIG" --init "$AL_INIT"
  LS_PROJECT_URL="$("$VENV/bin/python" labeling/simulated_annotator.py --config "$CONFIG" \
    --init "$AL_INIT" --print-url)"
else
  LS_PROJECT_URL="(not run: Label Studio is not up; infra/local/setup.sh installs it)"
fi

LS_USER_NAME="${LS_USER:-admin@earthloop.local}"
cat <<TXT

Demo finished. Where things are:
  chip index (Delta):        runs/demo/tables/chips
  pretraining runs (Delta):  runs/demo/tables/pretrain_runs, runs/demo/tables/pretrain_metrics
  checkpoints:               runs/demo/ray_results/
  exported backbone:         runs/demo/models/demo-seco/backbone.pt
  fine-tuning report:        runs/demo/reports/
  task models (Delta):       runs/demo/tables/task_models (files under runs/demo/models/task/)
  embeddings, predictions:   runs/demo/tables/embeddings, runs/demo/tables/predictions
  active-learning batch:     runs/demo/tables/al_rounds
  Label Studio project:      $LS_PROJECT_URL
    (tasks pre-annotated by the task model, served least confident first)
    user $LS_USER_NAME; password file $STACK_DIR/labelstudio_password,
    API token file $LABEL_STUDIO_TOKEN_PATH
  next round:                make demo-round  (simulated annotator → sync-labels → next round)
  Ray dashboard:             $RAY_ADDRESS_JOBS
  Prometheus metrics:        http://127.0.0.1:$RAY_HEAD_METRICS_PORT/metrics (head), :$RAY_WORKER_METRICS_PORT (worker)
Stop the stack with: make stack-down
TXT
