#!/usr/bin/env bash
# Local S3-compatible object store on loopback (moto; see docs/storage.md): up | down | status | env
# `up` starts it on $S3_HOST:$S3_PORT and creates $S3_BUCKET; `env` prints the client settings to
# eval (credentials are never printed: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY yourself; moto
# accepts any values).
set -euo pipefail
source "$(dirname "$0")/env.sh"
PIDFILE="$STACK_DIR/s3.pid"
LOG="$STACK_DIR/s3.log"
URL="http://$S3_HOST:$S3_PORT"

alive() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
answers() { "$S3_VENV/bin/python" - "$URL" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/", timeout=2)
PY
}
make_bucket() { "$S3_VENV/bin/python" - "$URL/$S3_BUCKET" <<'PY'
import sys, urllib.request, urllib.error
try:  # moto does not check signatures: an unsigned PUT creates the bucket
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="PUT"), timeout=5)
except urllib.error.HTTPError as exc:
    if exc.code != 409:  # 409: it exists already
        raise
PY
}

case "${1:-status}" in
  up)
    if alive && answers; then echo "s3: already running at $URL (bucket $S3_BUCKET)"; exit 0; fi
    if [ ! -x "$S3_VENV/bin/python" ] || ! "$S3_VENV/bin/python" -c "import moto.server" 2>/dev/null; then
      echo "s3: moto is not installed in $S3_VENV; run infra/local/setup.sh" >&2; exit 1
    fi
    (close_extra_fds; exec nohup "$S3_VENV/bin/python" "$EARTHLOOP_ROOT/infra/local/moto_serial.py" \
      "$S3_HOST" "$S3_PORT" >"$LOG" 2>&1) &
    echo $! >"$PIDFILE"
    for _ in $(seq 100); do answers && break; sleep 0.1; done
    if ! answers; then echo "s3: did not answer at $URL; see $LOG" >&2; exit 1; fi
    make_bucket
    echo "s3: up at $URL (bucket $S3_BUCKET; state is in memory and lost on stop)"
    ;;
  down)
    if alive; then kill "$(cat "$PIDFILE")"; echo "s3: stopped"; else echo "s3: not running"; fi
    rm -f "$PIDFILE"
    ;;
  status)
    if alive && answers; then echo "s3: running at $URL (pid $(cat "$PIDFILE"))"
    else echo "s3: down"; exit 1; fi
    ;;
  env)
    echo "export AWS_ENDPOINT_URL=$URL AWS_ALLOW_HTTP=true AWS_REGION=\${AWS_REGION:-us-east-1}"
    echo "# and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (any value for this local server);"
    echo "# then e.g. workdir=s3://$S3_BUCKET/demo"
    ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
