#!/usr/bin/env bash
# The whole local stack for the demo and the integration tests: 2-node Ray + STAC API.
#   stack.sh up [DATA_DIR]    stack.sh down    stack.sh status
# `up` is safe to repeat: it brings back whatever part is missing and leaves running parts alone.
set -euo pipefail
here="$(dirname "$0")"
source "$here/env.sh"
case "${1:-}" in
  up)
    data="${2:-$EARTHLOOP_ROOT/data/synthetic}"
    "$here/ray.sh" up
    "$here/stac.sh" up "$data"
    ;;
  down)
    "$here/stac.sh" down
    "$here/ray.sh" down
    ;;
  status)
    rc=0
    "$here/ray.sh" status || rc=1
    "$here/stac.sh" status || rc=1
    exit $rc
    ;;
  *) echo "usage: $0 up [DATA_DIR] | down | status" >&2; exit 2 ;;
esac
