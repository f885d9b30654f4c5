#!/usr/bin/env bash
# Label Studio (the annotation UI of the labeling loop) on loopback, from its own venv (.venv-ls).
#   labelstudio.sh up | down | status | env
# `up` is idempotent: a healthy server on the same port is left alone. The admin user, its password
# and its API token are created once, into files under $STACK_DIR with mode 0600, and never
# printed; `status` prints the URL and the *paths* of those files; `env` prints the client
# settings (`eval "$(labelstudio.sh env)"`): URL, user and token file, never the token itself.
# Settings (environment): LS_PORT (8080), LS_HOST (127.0.0.1), LS_DATA_DIR
# ($STACK_DIR/label-studio), LS_FILES_ROOT (document root of local-files serving, where chip
# previews are written: $EARTHLOOP_ROOT/runs, the default workdir's parent), LS_USER, LS_VENV.
set -euo pipefail
source "$(dirname "$0")/env.sh"
LS_VENV="${LS_VENV:-$EARTHLOOP_ROOT/.venv-ls}"
LS_HOST="${LS_HOST:-127.0.0.1}"
LS_PORT="${LS_PORT:-8080}"
LS_DATA_DIR="${LS_DATA_DIR:-$STACK_DIR/label-studio}"
LS_FILES_ROOT="${LS_FILES_ROOT:-$EARTHLOOP_ROOT/runs}"
LS_USER="${LS_USER:-admin@earthloop.local}"
PIDFILE="$STACK_DIR/labelstudio.pid"
PORTFILE="$STACK_DIR/labelstudio.port"
PASSWORD_FILE="$STACK_DIR/labelstudio_password"
TOKEN_FILE="$STACK_DIR/labelstudio_token"
LOG="$STACK_DIR/labelstudio.log"

url() { echo "http://$LS_HOST:$(cat "$PORTFILE" 2>/dev/null || echo "$LS_PORT")"; }

running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null \
    && curl -sf -o /dev/null --max-time 5 "$(url)/health"
}

# A secret file created once (hex from /dev/urandom), mode 0600; an existing one is kept: the
# token is stored in Label Studio's database when the user is created and never re-read later.
secret_file() {
  local path="$1" bytes="$2"
  if [ ! -s "$path" ]; then
    (
      umask 077
      tmp="$(mktemp "$path.XXXXXX")"
      od -An -N"$bytes" -tx1 /dev/urandom | tr -d ' \n' >"$tmp"
      mv -n "$tmp" "$path" 2>/dev/null || true
      rm -f "$tmp"
    )
  fi
  chmod 600 "$path"
}

port_busy() { (exec 3<>"/dev/tcp/$LS_HOST/$1") 2>/dev/null; }

# The server's environment. Sentry DSNs are set empty on purpose: their defaults report to the
# vendor. The bare HOST/PORT/USERNAME/PASSWORD variables are read by Label Studio too, and the
# client-side settings (`env` below) are not the server's business: unset.
start_server() {
  (
    close_extra_fds
    unset HOST PORT USERNAME PASSWORD \
      LABEL_STUDIO_URL LABEL_STUDIO_USER LABEL_STUDIO_API_KEY LABEL_STUDIO_TOKEN_PATH
    export LABEL_STUDIO_BASE_DATA_DIR="$LS_DATA_DIR" DJANGO_DB=sqlite \
      DATABASE_NAME="$LS_DATA_DIR/label_studio.sqlite3" \
      LABEL_STUDIO_USERNAME="$LS_USER" \
      LABEL_STUDIO_PASSWORD="$(cat "$PASSWORD_FILE")" \
      LABEL_STUDIO_USER_TOKEN="$(cat "$TOKEN_FILE")" \
      LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true \
      LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK=true \
      LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false SENTRY_DSN= FRONTEND_SENTRY_DSN= \
      LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true \
      LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT="$LS_FILES_ROOT" \
      USE_DEFAULT_BANNED_SUBNETS="${LS_BAN_PRIVATE_WEBHOOKS:-false}"
    # ^ Label Studio refuses webhook targets on private/loopback addresses (an SSRF guard); the
    # local stack's webhook receiver (labeling/webhook.py) is on 127.0.0.1, so the guard is off
    # here. On a shared server keep it on (LS_BAN_PRIVATE_WEBHOOKS=true) and reach the receiver
    # through the cluster's ingress (docs/labeling.md).
    exec nohup "$LS_VENV/bin/label-studio" start --internal-host "$LS_HOST" --port "$LS_PORT" \
      --no-browser --data-dir "$LS_DATA_DIR" --database "$LS_DATA_DIR/label_studio.sqlite3" \
      >"$LOG" 2>&1
  ) &
  echo $! >"$PIDFILE"
  echo "$LS_PORT" >"$PORTFILE"
}

up() {
  [ -x "$LS_VENV/bin/label-studio" ] || {
    echo "labelstudio: $LS_VENV/bin/label-studio not found (run infra/local/setup.sh)" >&2; exit 1; }
  if running && [ "$(cat "$PORTFILE")" = "$LS_PORT" ]; then
    echo "labelstudio: already up at $(url)"; return 0
  fi
  down >/dev/null
  # Label Studio silently moves to the next port when its own is taken: refuse instead.
  if port_busy "$LS_PORT"; then
    echo "labelstudio: $LS_HOST:$LS_PORT is taken by another process (set LS_PORT)" >&2; exit 1
  fi
  mkdir -p "$LS_DATA_DIR" "$LS_FILES_ROOT"
  secret_file "$PASSWORD_FILE" 16
  secret_file "$TOKEN_FILE" 20  # 40 hex digits: the legacy token format
  start_server
  # The first start runs the database migrations (~40 s alone, longer on a busy machine).
  for _ in $(seq 1 "${LS_START_TIMEOUT_S:-240}"); do
    if curl -sf -o /dev/null --max-time 2 "$(url)/health"; then
      if ! curl -sf -o /dev/null --max-time 5 -H "Authorization: Token $(cat "$TOKEN_FILE")" \
          "$(url)/api/current-user/whoami"; then
        down >/dev/null
        echo "labelstudio: the token in $TOKEN_FILE is refused: the database in $LS_DATA_DIR" \
          "was created with other credentials (remove it or restore the files); stopped" >&2
        exit 1
      fi
      echo "labelstudio: up at $(url) (user $LS_USER; credentials in $STACK_DIR, see status)"
      return 0
    fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then break; fi
    sleep 1
  done
  down >/dev/null
  tail -n 30 "$LOG" >&2; echo "labelstudio: did not start (log: $LOG)" >&2; exit 1
}

down() {
  if [ -f "$PIDFILE" ]; then
    local pid
    pid="$(cat "$PIDFILE")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
  fi
  rm -f "$PORTFILE"
  echo "labelstudio: stopped"
}

status() {
  if running; then
    echo "labelstudio: up at $(url) (user $LS_USER; password file $PASSWORD_FILE;" \
      "API token file $TOKEN_FILE)"
  else
    echo "labelstudio: down"; return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) echo "export LABEL_STUDIO_URL=$(url) LABEL_STUDIO_USER=$LS_USER LABEL_STUDIO_TOKEN_PATH=$TOKEN_FILE" ;;
  *) echo "usage: $0 up | down | status | env" >&2; exit 2 ;;
esac
