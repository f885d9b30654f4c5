#!/usr/bin/env bash
# The whole local stack for the demo and the integration tests: 2-node Ray + STAC API.
#   stack.sh up [DATA_DIR]    stack.sh down
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
  *) echo "usage: $0 up [DATA_DIR] | down" >&2; exit 2 ;;
esac
