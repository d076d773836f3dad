# Shared by bench/callgrind.sh and bench/link-order.sh (sourced, not run): a work directory cleaned up on exit,
# OS-chosen loopback ports, waiting for a URL, and the nginx origin serving /small (13 bytes).
# The caller sets NGINX, then calls bench_setup with a mktemp template.

bench_setup() {
  WORK=$(mktemp -d "$1")
  PIDS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  kill "$(cat "$WORK/origin/nginx.pid" 2>/dev/null)" 2>/dev/null || true
  rm -rf "$WORK"
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ok() {
  for _ in $(seq 1 900); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out: $1" >&2
  exit 1
}

# start_origin PORT: nginx on 127.0.0.1:PORT serving $WORK/www (with /small), one worker, keep-alive.
start_origin() {
  mkdir -p "$WORK/www" "$WORK/origin"
  printf 'Hello, Ferry\n' > "$WORK/www/small"
  local user_line=""
  [ "$(id -u)" -eq 0 ] && user_line="user root;"
  cat > "$WORK/origin/nginx.conf" <<CONF
$user_line
worker_processes 1; daemon off; pid $WORK/origin/nginx.pid; error_log $WORK/origin/error.log warn;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $WORK/origin/ct; proxy_temp_path $WORK/origin/pt;
  server { listen 127.0.0.1:$1; root $WORK/www; location / { } } }
CONF
  "$NGINX" -p "$WORK/origin" -c "$WORK/origin/nginx.conf" & PIDS+=($!)
}
