#!/usr/bin/env bash
# Side-by-side benchmark of Palisade's proxy, Squid and tinyproxy on loopback.
#
# Needs: apt-get install -y squid tinyproxy wrk nginx
# Usage: crates/palisade-proxy/bench/run.sh   (from the workspace root)
# Env:   DURATION (wrk seconds, default 10), CONNS (wrk connections, default 50),
#        IDLE_TUNNELS (default 9900: the sandbox's 20,000-descriptor cap allows
#        two sockets per tunnel in the proxy), BULK_BYTES (default 2 GiB).
#
# All traffic stays on 127.0.0.1. Every server started here is stopped on exit.
set -euo pipefail

DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
IDLE_TUNNELS=${IDLE_TUNNELS:-9900}
BULK_BYTES=${BULK_BYTES:-2147483648}
SETUP_COUNT=${SETUP_COUNT:-10000}

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
D=$(mktemp -d /tmp/palisade-bench.XXXXXX)
chmod 777 "$D"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

for tool in squid tinyproxy wrk nginx curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y squid tinyproxy wrk nginx" >&2; exit 1; }
done

echo "building release binaries..." >&2
(cd "$ROOT" && cargo build --release -q -p palisade-proxy --bins --examples)
BIN=$CARGO_TARGET_DIR/release
LOADGEN=$BIN/examples/loadgen

# Each proxy's tunnels go to a different loopback address, so the TIME_WAIT
# sockets one run leaves behind do not exhaust ephemeral ports for the next.
ORIGIN=127.0.0.1:18080
SOURCE=127.0.0.1:18091
declare -A DEST=([palisade]=127.0.0.1 [squid]=127.0.0.2 [tinyproxy]=127.0.0.3)
PAL=127.0.0.1:18128
SQUID=127.0.0.1:18130
TINY=127.0.0.1:18131

# Origin: nginx with a fixed small response.
cat >"$D/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $D/nginx.pid;
error_log $D/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $D/nginx-body;
  proxy_temp_path $D/nginx-proxy;
  fastcgi_temp_path $D/nginx-fcgi;
  uwsgi_temp_path $D/nginx-uwsgi;
  scgi_temp_path $D/nginx-scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:18080; listen 127.0.0.2:18080; listen 127.0.0.3:18080;
    location / { return 200 "hello from the origin\n"; }
  }
}
EOF
nginx -p "$D" -c "$D/nginx.conf" & PIDS+=($!)
"$LOADGEN" source 18091 & PIDS+=($!)
for ip in "${DEST[@]}"; do "$LOADGEN" hold "$ip:18092" & PIDS+=($!); done

# Palisade: one tenant for all of loopback; access log off (like Squid's access_log none).
cat >"$D/palisade.yaml" <<EOF
listen: $PAL
admin_listen: 127.0.0.1:18129
reload_poll: 0s
limits: { max_connections: 20000 }
timeouts: { idle: 10m }
tenants:
- name: bench
  sources: [{ prefix: 127.0.0.0/8, deployment: bench }]
  allow_ports: [18080, 18091, 18092]
  allow_cidrs: [127.0.0.0/8]
EOF
RUST_LOG=warn "$BIN/palisade-proxy" --config "$D/palisade.yaml" >"$D/palisade.log" 2>&1 & PAL_PID=$!; PIDS+=($PAL_PID)

cat >"$D/squid.conf" <<EOF
http_port $SQUID
http_access allow all
cache deny all
access_log none
cache_log $D/squid-cache.log
pid_filename $D/squid.pid
coredump_dir $D
max_filedescriptors 20000
shutdown_lifetime 1 seconds
EOF
squid -N -f "$D/squid.conf" & SQUID_PID=$!; PIDS+=($SQUID_PID)

cat >"$D/tinyproxy.conf" <<EOF
User nobody
Group nogroup
Port ${TINY##*:}
Listen 127.0.0.1
Timeout 600
MaxClients 20000
LogLevel Critical
LogFile "$D/tinyproxy.log"
PidFile "$D/tinyproxy.pid"
Allow 127.0.0.1
EOF
tinyproxy -d -c "$D/tinyproxy.conf" & TINY_PID=$!; PIDS+=($TINY_PID)

wait_port() {
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null -x "http://$1" "http://$ORIGIN/" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "proxy on $1 did not come up" >&2; exit 1
}
sleep 0.5
wait_port $PAL; wait_port $SQUID; wait_port $TINY

cat >"$D/abs.lua" <<EOF
wrk.path = "http://$ORIGIN/"
EOF

declare -A RPS P50 P99 SETUP BULK IDLE IDLE_ERR
to_ms() { # wrk latency like 1.23ms / 456.00us / 1.02s -> ms
  awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v); print v+0} else {sub(/s/,"",v); print v*1000} }'
}
run_wrk() { # name url [script]
  local out
  if [ -n "${3:-}" ]; then
    out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s "$3" "$2")
  else
    out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "$2")
  fi
  echo "$out" >"$D/wrk-$1.txt"
  RPS[$1]=$(echo "$out" | awk '/Requests\/sec/ {print int($2)}')
  P50[$1]=$(to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')")
  P99[$1]=$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")
  if echo "$out" | grep -q "Non-2xx"; then echo "warning: $1 had non-2xx responses" >&2; fi
}

echo "HTTP forward (wrk, ${DURATION}s, $CONNS connections)..." >&2
run_wrk direct "http://$ORIGIN/"
run_wrk palisade "http://$PAL" "$D/abs.lua"
run_wrk squid "http://$SQUID" "$D/abs.lua"
run_wrk tinyproxy "http://$TINY" "$D/abs.lua"

field() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1==k {print $2}'; }
for p in palisade squid tinyproxy; do
  case $p in palisade) addr=$PAL; pid=$PAL_PID;; squid) addr=$SQUID; pid=$SQUID_PID;; tinyproxy) addr=$TINY; pid=$TINY_PID;; esac
  echo "CONNECT setup, bulk and idle tunnels: $p..." >&2
  out=$("$LOADGEN" setup "$addr" "${DEST[$p]}:18080" "$SETUP_COUNT" 50 || echo "per_s=failed")
  SETUP[$p]=$(field "$out" per_s)
  out=$("$LOADGEN" bulk "$addr" "$SOURCE" "$BULK_BYTES" || echo "mib_per_s=failed")
  BULK[$p]=$(field "$out" mib_per_s)
  out=$("$LOADGEN" idle "$addr" "${DEST[$p]}:18092" "$IDLE_TUNNELS" "$pid" || echo "tunnels=0 errors=$IDLE_TUNNELS bytes_per_tunnel=0")
  echo "  $out" >&2
  IDLE[$p]=$(field "$out" bytes_per_tunnel)
  IDLE_ERR[$p]=$(field "$out" errors)
  kill -0 "$pid" 2>/dev/null || echo "  $p is no longer running" >&2
  sleep 3 # let the idle tunnels close before the next proxy
done
out=$("$LOADGEN" bulk --direct "$SOURCE" "$BULK_BYTES")
BULK[direct]=$(field "$out" mib_per_s)

printf '\n%-10s %10s %9s %9s %14s %12s %16s %10s\n' proxy "req/s" "p50 ms" "p99 ms" "CONNECT/s" "bulk MiB/s" "idle B/tunnel" "idle errs"
for p in direct palisade squid tinyproxy; do
  printf '%-10s %10s %9s %9s %14s %12s %16s %10s\n' "$p" "${RPS[$p]:--}" "${P50[$p]:--}" "${P99[$p]:--}" "${SETUP[$p]:--}" "${BULK[$p]:--}" "${IDLE[$p]:--}" "${IDLE_ERR[$p]:--}"
done
awk -v pr="${RPS[palisade]}" -v sr="${RPS[squid]}" -v pp="${P99[palisade]}" -v sp="${P99[squid]}" \
    -v pb="${BULK[palisade]}" -v db="${BULK[direct]}" -v ps="${SETUP[palisade]}" -v ss="${SETUP[squid]}" 'BEGIN {
  printf "\nPalisade vs Squid: %.1fx req/s, p99 %.2fx of Squid, %.1fx CONNECT setup rate; CONNECT bulk = %.0f%% of direct\n",
    pr/sr, pp/sp, ps/ss, 100*pb/db }'
echo "(idle tunnels: $IDLE_TUNNELS; raw wrk output in $D)"
