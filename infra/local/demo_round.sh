#!/usr/bin/env bash
# One more turn of the labeling loop after `make demo`: the simulated annotator labels the queued
# Label Studio tasks (ground truth of the demo rasters, in Label Studio's uncertainty order),
# sync-labels pulls them into the Delta `labels` table, and the next active-learning round
# selects and pushes a new batch (kNN and coverage now see the new labels).
#   demo_round.sh [CONFIG]   (after `make demo`; the stack must be up)
# Settings: AL_INIT (seco: which task model, as in demo.sh), ANNOTATE_LIMIT (all queued tasks),
# ANNOTATE_NOISE (0.05: fraction of pixels a careless brush relabels).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$EARTHLOOP_ROOT"
CONFIG="${1:-configs/demo.yaml}"
AL_INIT="${AL_INIT:-seco}"
"$(dirname "$0")/labelstudio.sh" status >/dev/null || {
  echo "demo-round: Label Studio is not up (make stack-up)" >&2; exit 1; }
limit=()
[ -n "${ANNOTATE_LIMIT:-}" ] && limit=(--limit "$ANNOTATE_LIMIT")
echo "== simulated annotator"
"$VENV/bin/python" labeling/simulated_annotator.py --config "$CONFIG" --init "$AL_INIT" \
  --noise "${ANNOTATE_NOISE:-0.05}" "${limit[@]}"
echo "== sync-labels"
"$VENV/bin/python" jobs/sync_labels.py --config "$CONFIG" --init "$AL_INIT"
# The next round uses the same task model (retraining on the pulled labels is a fine-tuning
# sweep with the Delta labels as its label source, not part of this command). It runs as a
# plain process: the index is already embedded, so it needs no Ray job.
echo "== next active-learning round"
"$VENV/bin/python" jobs/active_learning.py --config "$CONFIG" --init "$AL_INIT"
