#!/usr/bin/env bash
# The whole local stack for the demo and the integration tests: 2-node Ray + STAC API + S3 +
# Label Studio.
#   stack.sh up [DATA_DIR]    stack.sh down    stack.sh status
# `up` is safe to repeat: it brings back whatever part is missing and leaves running parts alone.
# The S3 stand-in (moto, infra/local/s3.sh) is optional: without its venv (.venv-s3) `up` says so
# and carries on, since a local workdir needs no object store; `status` then reports it down.
set -euo pipefail
here="$(dirname "$0")"
source "$here/env.sh"
s3_installed() { [ -x "$S3_VENV/bin/python" ]; }
ls_installed() { [ -x "$LS_VENV/bin/label-studio" ]; }
case "${1:-}" in
  up)
    data="${2:-$EARTHLOOP_ROOT/data/synthetic}"
    "$here/ray.sh" up
    "$here/stac.sh" up "$data"
    if s3_installed; then
      "$here/s3.sh" up
      echo "stack: for workdir=s3://$S3_BUCKET/<prefix>: eval \"\$($here/s3.sh env)\" and set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    else
      echo "stack: s3 skipped (no $S3_VENV; infra/local/setup.sh installs moto)"
    fi
    if ls_installed; then "$here/labelstudio.sh" up
    else echo "stack: label studio skipped (no $LS_VENV; infra/local/setup.sh installs it)"; fi
    ;;
  down)
    "$here/cogs.sh" down || true
    "$here/labelstudio.sh" down || true
    "$here/s3.sh" down
    "$here/stac.sh" down
    "$here/ray.sh" down
    ;;
  status)
    rc=0
    "$here/ray.sh" status || rc=1
    "$here/stac.sh" status || rc=1
    if s3_installed; then "$here/s3.sh" status || rc=1; else echo "s3: not installed"; fi
    if ls_installed; then "$here/labelstudio.sh" status || rc=1; else echo "label studio: not installed"; fi
    exit $rc
    ;;
  *) echo "usage: $0 up [DATA_DIR] | down | status" >&2; exit 2 ;;
esac
