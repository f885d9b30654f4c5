#!/usr/bin/env bash
# Start/stop a two-node Ray cluster on loopback: head on 127.0.0.2, worker on 127.0.0.3.
# (127.0.0.1 is silently replaced by the eth0 address; the worker needs its own agent port, and
# its own temp dir: two nodes sharing /tmp/ray unpack job working dirs over each other, deleting
# the folder a running job driver stands in.)
set -euo pipefail
source "$(dirname "$0")/env.sh"

# Alive node IPs, one line each ("" when the head does not answer). A TCP probe first: ray.init
# retries an absent GCS for minutes.
alive_ips() {
  "$VENV/bin/python" - <<PY 2>/dev/null || true
import socket, ray
try:
    socket.create_connection(("$RAY_HEAD_IP", $RAY_GCS_PORT), timeout=2).close()
except OSError:
    raise SystemExit(0)
ray.init(address="$RAY_HEAD_IP:$RAY_GCS_PORT", logging_level="ERROR", log_to_driver=False)
print("\n".join(sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])))
PY
}

has_ip() { grep -qx "$1" <<<"$2"; }

# The GCS notices a dead raylet only after its health checks fail (~15 s); on one machine the
# process table answers at once, so a node counts as up only if its raylet process also lives.
raylet_alive() {
  local pid
  for pid in $(pgrep -f -- "raylet/raylet " || true); do
    [ -r "/proc/$pid/cmdline" ] || continue
    if [ "$1" = "$RAY_WORKER_IP" ]; then
      grep -q -- "$RAY_WORKER_TEMP_DIR/" "/proc/$pid/cmdline" 2>/dev/null && return 0
    else
      grep -q -- "$RAY_WORKER_TEMP_DIR/" "/proc/$pid/cmdline" 2>/dev/null || return 0
    fi
  done
  return 1
}

node_up() { has_ip "$1" "$2" && raylet_alive "$1"; }

start_head() {
  (close_extra_fds; exec "$VENV/bin/ray" start --head --node-ip-address="$RAY_HEAD_IP" --port="$RAY_GCS_PORT" \
    --num-cpus="$RAY_NODE_CPUS" --object-store-memory="$RAY_OBJECT_STORE_BYTES" \
    --dashboard-host="$RAY_DASHBOARD_HOST" --dashboard-port="$RAY_DASHBOARD_PORT" \
    --metrics-export-port="$RAY_HEAD_METRICS_PORT" --disable-usage-stats >"$STACK_DIR/ray-head.log" 2>&1) \
    || { cat "$STACK_DIR/ray-head.log"; exit 1; }
}

start_worker() {
  # A worker whose raylet died leaves its agents behind, holding the agent and metrics ports;
  # everything that names the worker's temp dir belongs to that node.
  pkill -9 -f -- "$RAY_WORKER_TEMP_DIR" 2>/dev/null || true
  sleep 1
  (close_extra_fds; exec "$VENV/bin/ray" start --address="$RAY_HEAD_IP:$RAY_GCS_PORT" --node-ip-address="$RAY_WORKER_IP" \
    --num-cpus="$RAY_NODE_CPUS" --object-store-memory="$RAY_OBJECT_STORE_BYTES" \
    --metrics-export-port="$RAY_WORKER_METRICS_PORT" --dashboard-agent-listen-port=52366 \
    --temp-dir="$RAY_WORKER_TEMP_DIR" \
    --disable-usage-stats >"$STACK_DIR/ray-worker.log" 2>&1) \
    || { cat "$STACK_DIR/ray-worker.log"; exit 1; }
}

# Bring back whatever part is missing; leave running parts (and the jobs on them) alone.
up() {
  local ips
  ips="$(alive_ips)"
  if ! node_up "$RAY_HEAD_IP" "$ips"; then
    # No head: nothing of the old cluster is usable; clear leftovers, start both nodes.
    "$VENV/bin/ray" stop --force >/dev/null 2>&1 || true
    pkill -9 -f -- "$RAY_WORKER_TEMP_DIR" 2>/dev/null || true
    start_head
    start_worker
  elif ! node_up "$RAY_WORKER_IP" "$ips"; then
    echo "ray: head running, worker $RAY_WORKER_IP missing: starting it"
    start_worker
  else
    echo "ray: already running (head $RAY_HEAD_IP, worker $RAY_WORKER_IP)"; return 0
  fi
  for _ in $(seq 1 60); do
    ips="$(alive_ips)"
    if node_up "$RAY_HEAD_IP" "$ips" && node_up "$RAY_WORKER_IP" "$ips"; then
      echo "ray: 2 nodes up; dashboard $RAY_ADDRESS_JOBS"; return 0
    fi
    sleep 1
  done
  echo "ray: worker node did not join" >&2; exit 1
}

status() {
  local ips rc=0
  ips="$(alive_ips)"
  for part in "head:$RAY_HEAD_IP" "worker:$RAY_WORKER_IP"; do
    if node_up "${part#*:}" "$ips"; then echo "ray ${part%%:*} (${part#*:}): up"
    else echo "ray ${part%%:*} (${part#*:}): down"; rc=1; fi
  done
  return $rc
}

down() {
  "$VENV/bin/ray" stop --force >/dev/null 2>&1 || true
  pkill -9 -f -- "$RAY_WORKER_TEMP_DIR" 2>/dev/null || true
  echo "ray: stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
