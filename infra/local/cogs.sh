#!/usr/bin/env bash
# COGs over HTTP on loopback, as Earth Search / Planetary Computer serve them: install | up | down | status
#
# `up` starts Debian's nginx (HTTP Range requests are native to it) as the current user, with its
# own config, pid, logs and temp folders under $STACK_DIR/cogs/<port>/ (no system service, nothing
# root-owned at run time), serving $COGS_ROOT on $COGS_HOST:$COGS_PORT; then one latency proxy
# (infra/local/latency_proxy.py) per entry of $COGS_PROXIES ("PORT:DELAY_MS ..."), each adding
# DELAY_MS per round trip in front of nginx (the kernel here has no netem). `install` adds
# nginx-light from Debian's packages if no nginx is on the machine (needs root or sudo).
#
# Settings (environment): COGS_ROOT (default ../shared/data beside the checkout), COGS_HOST
# (127.0.0.1), COGS_PORT (8088), COGS_PROXIES ("8089:20 8094:80"; 8090/8091 are Ray's metrics
# ports), COGS_ACCESS_LOG (1: log every request with its Range header to access.log; default 0).
# Several instances run side by side when their ports differ (tests use free ports).
set -euo pipefail
source "$(dirname "$0")/env.sh"
COGS_ROOT="${COGS_ROOT:-$EARTHLOOP_ROOT/../shared/data}"
COGS_HOST="${COGS_HOST:-127.0.0.1}"
COGS_PORT="${COGS_PORT:-8088}"
COGS_PROXIES="${COGS_PROXIES:-8089:20 8094:80}"
COGS_ACCESS_LOG="${COGS_ACCESS_LOG:-0}"
PREFIX="$STACK_DIR/cogs/$COGS_PORT"
CONF="$PREFIX/nginx.conf"
PIDFILE="$PREFIX/nginx.pid"
URL="http://$COGS_HOST:$COGS_PORT"
PY="$VENV/bin/python"
[ -x "$PY" ] || PY="$(command -v python3)"

nginx_bin() { command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
answers() { "$PY" - "$URL/__earthloop_cogs_health" <<'PY' 2>/dev/null
import sys, urllib.request
assert urllib.request.urlopen(sys.argv[1], timeout=2).read() == b"ok"
PY
}
listening() { "$PY" -c "import socket,sys; socket.create_connection(('$COGS_HOST', int(sys.argv[1])), 1).close()" "$1" 2>/dev/null; }

write_conf() {
  local root user_line="" log_line="access_log off;"
  root="$(cd "$COGS_ROOT" && pwd -P)"
  mkdir -p "$PREFIX/tmp"
  # as root, nginx would hand its workers to "nobody"; keep them as the user who started it
  if [ "$(id -u)" = 0 ]; then user_line="user $(id -un) $(id -gn);"; fi
  if [ "$COGS_ACCESS_LOG" = 1 ]; then
    log_line="access_log $PREFIX/access.log ranges buffer=4k flush=1s;"
  fi
  cat >"$CONF" <<EOF
# written by infra/local/cogs.sh; edits are overwritten on the next \`up\`
$user_line
daemon on;
worker_processes 1;
pid $PIDFILE;
error_log $PREFIX/error.log warn;
events { worker_connections 1024; }
http {
  default_type application/octet-stream;
  types { image/tiff tif tiff; image/jp2 jp2; application/json json; }
  log_format ranges '\$remote_addr "\$request" \$status \$body_bytes_sent "\$http_range"';
  $log_line
  client_body_temp_path $PREFIX/tmp/body;
  proxy_temp_path $PREFIX/tmp/proxy;
  fastcgi_temp_path $PREFIX/tmp/fastcgi;
  uwsgi_temp_path $PREFIX/tmp/uwsgi;
  scgi_temp_path $PREFIX/tmp/scgi;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 75s;
  keepalive_requests 100000;
  open_file_cache max=1000 inactive=60s;
  server {
    listen $COGS_HOST:$COGS_PORT;
    root $root;
    autoindex off;
    location = /__earthloop_cogs_health { default_type text/plain; return 200 "ok"; }
    location / { try_files \$uri =404; }
  }
}
EOF
}

start_proxies() {
  local spec port delay pidf
  for spec in $COGS_PROXIES; do
    port="${spec%%:*}"; delay="${spec#*:}"
    pidf="$PREFIX/proxy-$port.pid"
    if alive "$pidf" && listening "$port"; then continue; fi
    (close_extra_fds; exec nohup "$PY" "$EARTHLOOP_ROOT/infra/local/latency_proxy.py" \
      --listen "$COGS_HOST:$port" --upstream "$COGS_HOST:$COGS_PORT" --delay-ms "$delay" \
      >"$PREFIX/proxy-$port.log" 2>&1) &
    echo $! >"$pidf"
    for _ in $(seq 50); do listening "$port" && break; sleep 0.1; done
    if ! listening "$port"; then
      echo "cogs: latency proxy on $port did not start; see $PREFIX/proxy-$port.log" >&2; exit 1
    fi
    echo "cogs: proxy http://$COGS_HOST:$port/ (+$delay ms per round trip)"
  done
}

stop_pidfile() {
  local pidf="$1" what="$2" pid
  if alive "$pidf"; then
    pid="$(cat "$pidf")"
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "cogs: stopped $what"
  fi
  rm -f "$pidf"
}

case "${1:-status}" in
  install)
    if [ -n "$(nginx_bin)" ]; then echo "cogs: nginx present ($(nginx_bin))"; exit 0; fi
    sudo_cmd=(); [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get install -y --no-install-recommends nginx-light >/dev/null
    echo "cogs: installed $(nginx_bin)"
    ;;
  up)
    NGINX="$(nginx_bin)"
    if [ -z "$NGINX" ]; then echo "cogs: nginx is not installed; run infra/local/cogs.sh install" >&2; exit 1; fi
    if [ ! -d "$COGS_ROOT" ]; then echo "cogs: COGS_ROOT $COGS_ROOT is not a directory" >&2; exit 1; fi
    mkdir -p "$PREFIX"
    if alive "$PIDFILE" && answers; then
      echo "cogs: nginx already serving at $URL/"
    else
      rm -f "$PIDFILE"
      write_conf
      (close_extra_fds; exec "$NGINX" -p "$PREFIX" -c "$CONF" -e "$PREFIX/error.log")
      for _ in $(seq 50); do answers && break; sleep 0.1; done
      if ! answers; then echo "cogs: nginx did not answer at $URL; see $PREFIX/error.log" >&2; exit 1; fi
      echo "cogs: nginx serving $(cd "$COGS_ROOT" && pwd -P) at $URL/"
    fi
    start_proxies
    ;;
  down)
    for pidf in "$PREFIX"/proxy-*.pid; do
      [ -e "$pidf" ] || continue
      stop_pidfile "$pidf" "proxy $(basename "$pidf" .pid | sed 's/proxy-//')"
    done
    if [ -f "$PIDFILE" ]; then stop_pidfile "$PIDFILE" "nginx on $COGS_PORT"; else echo "cogs: nginx on $COGS_PORT not running"; fi
    ;;
  status)
    rc=0
    if alive "$PIDFILE" && answers; then echo "cogs: nginx serving at $URL/ (pid $(cat "$PIDFILE"))"
    else echo "cogs: nginx on $COGS_PORT down"; rc=1; fi
    for spec in $COGS_PROXIES; do
      port="${spec%%:*}"
      if alive "$PREFIX/proxy-$port.pid" && listening "$port"; then echo "cogs: proxy on $port up (+${spec#*:} ms)"
      else echo "cogs: proxy on $port down"; rc=1; fi
    done
    exit $rc
    ;;
  *) echo "usage: $0 install|up|down|status" >&2; exit 2 ;;
esac
