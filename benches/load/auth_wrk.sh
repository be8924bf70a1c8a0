#!/usr/bin/env bash
# Loopback load on one reference service, layers on vs off, alternating: requests per
# second (wrk) and the server's own CPU time per request (from /proc/<pid>/stat).
#
#   cargo build --release -p secureconnect-examples --bin auth
#   benches/load/auth_wrk.sh [rounds] [seconds] [path]
#
# Needs wrk. Each round starts the auth service with SC_LAYERS=on, then off (RUST_LOG=warn:
# no access log), and runs `wrk -t1 -c16` against it. Redis is not needed (the service
# runs degraded without it; /health does not touch it).
set -euo pipefail
rounds=${1:-3}
seconds=${2:-10}
path=${3:-/health}
bin=${AUTH_BIN:-target/release/auth}
port=${PORT:-18481}
ticks=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() {
  local layers=$1
  AUTH_ADDR=127.0.0.1:$port JWT_SECRET=load-benchmark-secret-of-32-bytes-at-least \
    REDIS_URL=redis://127.0.0.1:1 SC_LAYERS=$layers RUST_LOG=warn "$bin" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 50); do
    curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  wrk -t1 -c16 -d1s "http://127.0.0.1:$port$path" >/dev/null # warm-up
  local before
  before=$(cpu_ticks "$pid")
  local out
  out=$(wrk -t1 -c16 -d"${seconds}s" "http://127.0.0.1:$port$path")
  local after
  after=$(cpu_ticks "$pid")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  local requests
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  local rps
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  awk -v l="$layers" -v r="$rps" -v n="$requests" -v c="$((after - before))" -v t="$ticks" \
    'BEGIN { printf "layers=%-3s  %10.0f req/s  %6.2f us server CPU per request\n", l, r, c / t * 1e6 / n }'
}

for round in $(seq "$rounds"); do
  echo "round $round"
  run on
  run off
done
