#!/usr/bin/env bash
# Side-by-side benchmark of Palisade's proxy, Squid and tinyproxy on loopback.
#
# Needs: apt-get install -y squid tinyproxy wrk nginx
# Usage: crates/palisade-proxy/bench/run.sh   (from the workspace root)
# Env:   DURATION (wrk seconds, default 10), CONNS (wrk connections, default 50),
#        IDLE_TUNNELS (default 9900: the sandbox's 20,000-descriptor cap allows
#        two sockets per tunnel in the proxy), BULK_BYTES (default 2 GiB),
#        WRK_THREADS (default: 1 with PIN=1, else 2),
#        ROUNDS (default 3), PIN (default 0: nothing pinned, every proxy, the
#        origin and the load tools share both cores; 1: every proxy runs on
#        CPU 1 only and nginx, wrk and loadgen on CPU 0 only, for the proxied
#        and the direct runs alike, so each proxy gets the same dedicated core
#        and the load side the same other core, like a separate load machine).
#
# The machine may be shared, so every measurement is taken ROUNDS times,
# interleaved (direct, palisade, squid, tinyproxy, then again): the table shows
# medians and the ratios are medians of per-round ratios (each proxy compared
# with the run next to it), with the spread across rounds.
#
# The bulk table also has a bare splice(2) relay (`loadgen relay`), placed like
# the proxies: the most a user-space relay gets on this machine, against which
# "% of direct" should be read.
#
# All traffic stays on 127.0.0.1. Every server started here is stopped on exit.
set -euo pipefail

DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
IDLE_TUNNELS=${IDLE_TUNNELS:-9900}
BULK_BYTES=${BULK_BYTES:-2147483648}
SETUP_COUNT=${SETUP_COUNT:-10000}
ROUNDS=${ROUNDS:-3}
PIN=${PIN:-0}
PROXY_CPU=()
LOAD_CPU=()
if [ "$PIN" = 1 ]; then PROXY_CPU=(taskset -c 1); LOAD_CPU=(taskset -c 0); fi
# One wrk thread per core the load side may use: two threads on one core only
# take turns, and their context switches land in every proxy's latency.
WRK_THREADS=${WRK_THREADS:-$([ "$PIN" = 1 ] && echo 1 || echo 2)}

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
LOADGEN_BIN=$BIN/examples/loadgen
LOADGEN() { "${LOAD_CPU[@]}" "$LOADGEN_BIN" "$@"; }
WRK() { "${LOAD_CPU[@]}" wrk "$@"; }

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
"${LOAD_CPU[@]}" nginx -p "$D" -c "$D/nginx.conf" & PIDS+=($!)
# Background servers are started as plain commands so that $! is their own pid.
"${LOAD_CPU[@]}" "$LOADGEN_BIN" source 18091 & PIDS+=($!)
for ip in "${DEST[@]}"; do "${LOAD_CPU[@]}" "$LOADGEN_BIN" hold "$ip:18092" & PIDS+=($!); done
# The bulk yardstick: a bare splice(2) relay (no policy, no event loop), placed
# like the proxies. What it reaches is about what any user-space relay can.
RELAY=127.0.0.1:18132
"${PROXY_CPU[@]}" "$LOADGEN_BIN" relay "$RELAY" & PIDS+=($!)

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
RUST_LOG=warn "${PROXY_CPU[@]}" "$BIN/palisade-proxy" --config "$D/palisade.yaml" >"$D/palisade.log" 2>&1 & PAL_PID=$!; PIDS+=($PAL_PID)

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
"${PROXY_CPU[@]}" squid -N -f "$D/squid.conf" & SQUID_PID=$!; PIDS+=($SQUID_PID)

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
"${PROXY_CPU[@]}" tinyproxy -d -c "$D/tinyproxy.conf" & TINY_PID=$!; PIDS+=($TINY_PID)

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
# Values are appended per round: RPS[palisade]="43000 41000 45000".
run_wrk() { # name round url [script]
  local out
  if [ -n "${4:-}" ]; then
    out=$(WRK -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$4" "$3")
  else
    out=$(WRK -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$3")
  fi
  echo "$out" >"$D/wrk-$1-$2.txt"
  RPS[$1]+=" $(echo "$out" | awk '/Requests\/sec/ {print int($2)}')"
  P50[$1]+=" $(to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')")"
  P99[$1]+=" $(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")"
  if echo "$out" | grep -q "Non-2xx"; then echo "warning: $1 had non-2xx responses" >&2; fi
}
field() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1==k {print $2}'; }
median() { echo "$@" | tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END { if (NR==0) print "-"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2 }'; }
# Per-round ratios a[i]/b[i] -> "median (min-max)".
ratios() { # "a1 a2 .." "b1 b2 .." scale digits
  awk -v a="$1" -v b="$2" -v s="$3" -v d="$4" 'BEGIN { n=split(a,x," "); split(b,y," "); m=0
    for (i=1;i<=n;i++) if (y[i]>0 && x[i]!="failed" && y[i]!="failed") r[++m]=s*x[i]/y[i]
    if (m==0) { print "-"; exit }
    for (i=1;i<=m;i++) for (j=i+1;j<=m;j++) if (r[j]<r[i]) { t=r[i]; r[i]=r[j]; r[j]=t }
    med = (m%2) ? r[(m+1)/2] : (r[m/2]+r[m/2+1])/2
    printf "%." d "f (%." d "f-%." d "f over %d rounds)", med, r[1], r[m], m }'
}
addr_of() { case $1 in palisade) echo $PAL;; squid) echo $SQUID;; tinyproxy) echo $TINY;; esac; }
pid_of() { case $1 in palisade) echo $PAL_PID;; squid) echo $SQUID_PID;; tinyproxy) echo $TINY_PID;; esac; }

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS: HTTP forward (wrk, ${DURATION}s, $CONNS connections)..." >&2
  run_wrk direct "$round" "http://$ORIGIN/"
  for p in palisade squid tinyproxy; do run_wrk "$p" "$round" "http://$(addr_of $p)" "$D/abs.lua"; done
  echo "round $round/$ROUNDS: CONNECT setup rate and bulk throughput..." >&2
  for p in palisade squid tinyproxy; do
    out=$(LOADGEN setup "$(addr_of $p)" "${DEST[$p]}:18080" "$SETUP_COUNT" 50 || echo "per_s=failed")
    SETUP[$p]+=" $(field "$out" per_s)"
  done
  for p in direct relay palisade squid tinyproxy; do
    if [ $p = direct ]; then
      out=$(LOADGEN bulk --direct "$SOURCE" "$BULK_BYTES" || echo "mib_per_s=failed")
    elif [ $p = relay ]; then
      out=$(LOADGEN bulk "$RELAY" "$SOURCE" "$BULK_BYTES" || echo "mib_per_s=failed")
    else
      out=$(LOADGEN bulk "$(addr_of $p)" "$SOURCE" "$BULK_BYTES" || echo "mib_per_s=failed")
    fi
    BULK[$p]+=" $(field "$out" mib_per_s)"
  done
  sleep 2 # let TIME_WAIT and closing tunnels settle between rounds
done

for p in palisade squid tinyproxy; do
  pid=$(pid_of $p)
  echo "idle tunnels: $p..." >&2
  out=$(LOADGEN idle "$(addr_of $p)" "${DEST[$p]}:18092" "$IDLE_TUNNELS" "$pid" || echo "tunnels=0 errors=$IDLE_TUNNELS bytes_per_tunnel=0")
  echo "  $out" >&2
  IDLE[$p]=$(field "$out" bytes_per_tunnel)
  IDLE_ERR[$p]=$(field "$out" errors)
  kill -0 "$pid" 2>/dev/null || echo "  $p is no longer running" >&2
  sleep 3 # let the idle tunnels close before the next proxy
done

echo
echo "medians of $ROUNDS rounds; wrk -t$WRK_THREADS -c$CONNS; PIN=$PIN ($([ "$PIN" = 1 ] && echo 'each proxy on CPU 1 only; nginx, wrk, loadgen on CPU 0' || echo 'nothing pinned: proxies, origin and load tools share both cores'))"
printf '%-10s %10s %9s %9s %14s %12s %16s %10s\n' proxy "req/s" "p50 ms" "p99 ms" "CONNECT/s" "bulk MiB/s" "idle B/tunnel" "idle errs"
for p in direct relay palisade squid tinyproxy; do
  printf '%-10s %10s %9s %9s %14s %12s %16s %10s\n' "$p" "$(median ${RPS[$p]:-})" "$(median ${P50[$p]:-})" "$(median ${P99[$p]:-})" \
    "$(median ${SETUP[$p]:-})" "$(median ${BULK[$p]:-})" "${IDLE[$p]:--}" "${IDLE_ERR[$p]:--}"
done
echo
echo "Palisade vs Squid (per-round ratios, median (min-max)):"
echo "  req/s:            $(ratios "${RPS[palisade]}" "${RPS[squid]}" 1 2)x"
echo "  p99 latency:      $(ratios "${P99[palisade]}" "${P99[squid]}" 1 2)x of Squid's"
echo "  CONNECT setup/s:  $(ratios "${SETUP[palisade]}" "${SETUP[squid]}" 1 2)x"
echo "CONNECT bulk vs direct (same round): palisade $(ratios "${BULK[palisade]}" "${BULK[direct]}" 100 0)%, squid $(ratios "${BULK[squid]}" "${BULK[direct]}" 100 0)%, tinyproxy $(ratios "${BULK[tinyproxy]}" "${BULK[direct]}" 100 0)%"
echo "  yardstick: the bare splice relay reaches $(ratios "${BULK[relay]}" "${BULK[direct]}" 100 0)% of direct; palisade $(ratios "${BULK[palisade]}" "${BULK[relay]}" 100 0)% of the bare relay"
echo "per round: req/s palisade [${RPS[palisade]} ] squid [${RPS[squid]} ]; p99 ms palisade [${P99[palisade]} ] squid [${P99[squid]} ]; bulk MiB/s direct [${BULK[direct]} ] relay [${BULK[relay]} ] palisade [${BULK[palisade]} ]"
echo "(idle tunnels: $IDLE_TUNNELS; raw wrk output in $D)"
