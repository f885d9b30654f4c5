# Shared settings of the local stack; sourced by every script (and CI) so all agree on one
# Ray auth mode and one set of loopback addresses.
EARTHLOOP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export EARTHLOOP_ROOT
export VENV="${VENV:-$EARTHLOOP_ROOT/.venv}"
export STAC_VENV="${STAC_VENV:-$EARTHLOOP_ROOT/.venv-stac}"
export STACK_DIR="${STACK_DIR:-$EARTHLOOP_ROOT/.stack}"
mkdir -p "$STACK_DIR"
# Ray 2.60 turns token auth on by default; every client (driver, `ray job submit`, tests) must
# say so too, or it is refused with InvalidAuthToken.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
# The token: the user's own (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH) if given, else a project-local
# file created once with mode 0600. Never ~/.ray/auth_token: a developer's home directory would hide
# a missing set-up step on a fresh machine. The token is never printed.
if [ -z "${RAY_AUTH_TOKEN:-}" ]; then
  export RAY_AUTH_TOKEN_PATH="${RAY_AUTH_TOKEN_PATH:-$STACK_DIR/ray_auth_token}"
  if [ ! -s "$RAY_AUTH_TOKEN_PATH" ]; then
    (
      umask 077
      mkdir -p "$(dirname "$RAY_AUTH_TOKEN_PATH")"
      tmp="$(mktemp "$RAY_AUTH_TOKEN_PATH.XXXXXX")"
      od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$tmp"
      # no-clobber: two scripts starting at once keep the first token, not a mix of both
      mv -n "$tmp" "$RAY_AUTH_TOKEN_PATH" 2>/dev/null || true
      rm -f "$tmp"
    )
  fi
  chmod 600 "$RAY_AUTH_TOKEN_PATH"
fi
export RAY_HEAD_IP="${RAY_HEAD_IP:-127.0.0.2}"
export RAY_WORKER_IP="${RAY_WORKER_IP:-127.0.0.3}"
export RAY_GCS_PORT="${RAY_GCS_PORT:-6390}"
export RAY_DASHBOARD_HOST="${RAY_DASHBOARD_HOST:-127.0.0.1}"
export RAY_DASHBOARD_PORT="${RAY_DASHBOARD_PORT:-8265}"
export RAY_HEAD_METRICS_PORT="${RAY_HEAD_METRICS_PORT:-8090}"
export RAY_WORKER_METRICS_PORT="${RAY_WORKER_METRICS_PORT:-8091}"
export RAY_WORKER_TEMP_DIR="${RAY_WORKER_TEMP_DIR:-/tmp/ray-worker}"
export RAY_NODE_CPUS="${RAY_NODE_CPUS:-2}"
export RAY_OBJECT_STORE_BYTES="${RAY_OBJECT_STORE_BYTES:-1500000000}"
export RAY_ADDRESS_JOBS="http://${RAY_DASHBOARD_HOST}:${RAY_DASHBOARD_PORT}"
export STAC_HOST="${STAC_HOST:-127.0.0.1}"
export STAC_PORT="${STAC_PORT:-8181}"
# Decode-bound, honest I/O figures: a small GDAL block cache per process (see docs/benchmarks.md).
export GDAL_CACHEMAX="${GDAL_CACHEMAX:-64}"
export PATH="$VENV/bin:$PATH"
# Local S3 stand-in (moto, own venv; infra/local/s3.sh). Credentials are never set here.
export S3_VENV="${S3_VENV:-$EARTHLOOP_ROOT/.venv-s3}"
export S3_HOST="${S3_HOST:-127.0.0.1}"
export S3_PORT="${S3_PORT:-9000}"
export S3_BUCKET="${S3_BUCKET:-earthloop}"
# Label Studio (own venv; infra/local/labelstudio.sh). Password and token live in 0600 files
# under $STACK_DIR, created once; only their paths are exported.
export LS_VENV="${LS_VENV:-$EARTHLOOP_ROOT/.venv-ls}"
export LS_HOST="${LS_HOST:-127.0.0.1}"
export LS_PORT="${LS_PORT:-8080}"
export LS_FILES_ROOT="${LS_FILES_ROOT:-$EARTHLOOP_ROOT/runs}"
export LABEL_STUDIO_URL="${LABEL_STUDIO_URL:-http://$LS_HOST:$LS_PORT}"
export LABEL_STUDIO_TOKEN_PATH="${LABEL_STUDIO_TOKEN_PATH:-$STACK_DIR/labelstudio_token}"

# Daemons must not inherit the caller's extra file descriptors: a held lock file (flock) or a
# pipe would stay open for as long as the service runs. Call it in the subshell that execs one.
close_extra_fds() {
  local fd
  for fd in $(ls /proc/$BASHPID/fd 2>/dev/null); do  # BASHPID: the calling subshell
    # 255: the fd bash reads its script from
    { [ "$fd" -gt 2 ] && [ "$fd" != 255 ]; } 2>/dev/null && eval "exec $fd>&-" 2>/dev/null || true
  done
}
