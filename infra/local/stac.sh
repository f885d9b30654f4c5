#!/usr/bin/env bash
# Serve a folder holding collection.json + items.ndjson as a real STAC API (rustac) on loopback.
#   stac.sh up DIR [PORT]   (STAC_BACKEND=duckdb serves stac-geoparquet with CQL2 filter support)
#   stac.sh down | status
# `up` leaves a healthy server that serves the same folder (and the same items file) alone:
# restarting it would break an ingest that is searching it right now.
set -euo pipefail
source "$(dirname "$0")/env.sh"
PIDFILE="$STACK_DIR/stac.pid"
SERVED="$STACK_DIR/stac.served"

running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null \
    && curl -sf -o /dev/null "http://$STAC_HOST:$(cat "$STACK_DIR/stac.port" 2>/dev/null || echo "$STAC_PORT")/"
}

status() {
  if running; then echo "stac: up at http://$STAC_HOST:$(cat "$STACK_DIR/stac.port") ($(cat "$SERVED"))"
  else echo "stac: down"; return 1; fi
}

up() {
  local dir="$1" port="${2:-$STAC_PORT}"
  [ -f "$dir/items.ndjson" ] || { echo "stac: $dir/items.ndjson not found (run earthloop sample-data)" >&2; exit 1; }
  local want
  # the items file's size and mtime too: regenerated data in the same folder needs a restart
  want="$(cd "$dir" && pwd) ${STAC_BACKEND:-memory} $(stat -c %s-%Y "$dir/items.ndjson")"
  if running && [ "$(cat "$SERVED" 2>/dev/null)" = "$want" ] \
     && [ "$(cat "$STACK_DIR/stac.port" 2>/dev/null)" = "$port" ]; then
    echo "stac: already serving $dir at http://$STAC_HOST:$port"; return 0
  fi
  down >/dev/null
  local args=("$dir/collection.json" "$dir/items.ndjson")
  if [ "${STAC_BACKEND:-memory}" = "duckdb" ]; then
    # DuckDB cannot download its extensions here: use the ones rustac-duckdb-extensions ships.
    export HOME="$STACK_DIR/stac-home"
    mkdir -p "$HOME/.duckdb"
    ext=$("$STAC_VENV/bin/python" -c "import rustac_duckdb_extensions,os;print(os.path.join(os.path.dirname(rustac_duckdb_extensions.__file__),'extensions'))")
    cp -r "$ext" "$HOME/.duckdb/"
    "$STAC_VENV/bin/rustac" translate "$dir/items.ndjson" "$STACK_DIR/items.parquet"
    args=("$STACK_DIR/items.parquet")
  fi
  (close_extra_fds; exec nohup "$STAC_VENV/bin/rustac" serve --addr "$STAC_HOST:$port" "${args[@]}" \
    >"$STACK_DIR/stac.log" 2>&1) &
  echo $! >"$PIDFILE"
  echo "$port" >"$STACK_DIR/stac.port"
  echo "$want" >"$SERVED"
  for _ in $(seq 1 50); do
    if curl -sf "http://$STAC_HOST:$port/" >/dev/null; then
      echo "stac: serving $dir at http://$STAC_HOST:$port"; return 0
    fi
    sleep 0.2
  done
  cat "$STACK_DIR/stac.log" >&2; echo "stac: did not start" >&2; exit 1
}

down() {
  if [ -f "$PIDFILE" ]; then kill "$(cat "$PIDFILE")" 2>/dev/null || true; rm -f "$PIDFILE"; fi
  rm -f "$SERVED" "$STACK_DIR/stac.port"
  echo "stac: stopped"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up DIR [PORT] | down | status" >&2; exit 2 ;;
esac
