#!/usr/bin/env bash
# Start/stop a two-node Ray cluster on loopback: head on 127.0.0.2, worker on 127.0.0.3.
# (127.0.0.1 is silently replaced by the eth0 address; the worker needs its own agent port, and
# its own temp dir: two nodes sharing /tmp/ray unpack job working dirs over each other, deleting
# the folder a running job driver stands in.)
set -euo pipefail
source "$(dirname "$0")/env.sh"

status() { "$VENV/bin/ray" status --address "$RAY_HEAD_IP:$RAY_GCS_PORT" >/dev/null 2>&1; }

up() {
  if status; then echo "ray: already running at $RAY_HEAD_IP:$RAY_GCS_PORT"; return 0; fi
  "$VENV/bin/ray" start --head --node-ip-address="$RAY_HEAD_IP" --port="$RAY_GCS_PORT" \
    --num-cpus="$RAY_NODE_CPUS" --object-store-memory="$RAY_OBJECT_STORE_BYTES" \
    --dashboard-host="$RAY_DASHBOARD_HOST" --dashboard-port="$RAY_DASHBOARD_PORT" \
    --metrics-export-port="$RAY_HEAD_METRICS_PORT" --disable-usage-stats >"$STACK_DIR/ray-head.log" 2>&1 \
    || { cat "$STACK_DIR/ray-head.log"; exit 1; }
  "$VENV/bin/ray" start --address="$RAY_HEAD_IP:$RAY_GCS_PORT" --node-ip-address="$RAY_WORKER_IP" \
    --num-cpus="$RAY_NODE_CPUS" --object-store-memory="$RAY_OBJECT_STORE_BYTES" \
    --metrics-export-port="$RAY_WORKER_METRICS_PORT" --dashboard-agent-listen-port=52366 \
    --temp-dir="$RAY_WORKER_TEMP_DIR" \
    --disable-usage-stats >"$STACK_DIR/ray-worker.log" 2>&1 \
    || { cat "$STACK_DIR/ray-worker.log"; exit 1; }
  for _ in $(seq 1 60); do
    n=$("$VENV/bin/python" - <<PY 2>/dev/null || true
import ray
ray.init(address="$RAY_HEAD_IP:$RAY_GCS_PORT", logging_level="ERROR")
print(sum(1 for n in ray.nodes() if n["Alive"]))
PY
)
    [ "${n:-0}" -ge 2 ] && { echo "ray: 2 nodes up; dashboard $RAY_ADDRESS_JOBS"; return 0; }
    sleep 1
  done
  echo "ray: worker node did not join" >&2; exit 1
}

down() { "$VENV/bin/ray" stop --force >/dev/null 2>&1 || true; echo "ray: stopped"; }

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status && echo "ray: running" || { echo "ray: not running"; exit 1; } ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
