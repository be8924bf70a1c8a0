#!/usr/bin/env bash
# Where the auth service's CPU goes under loopback load, layers on vs off: `perf` samples
# (cpu-clock) of the server process during a `wrk -t1 -c16` run, turned into nanoseconds
# of server CPU per request, per function; then the functions whose cost grows most
# when the layers are on.
#
#   cargo build --release -p secureconnect-examples --bin auth
#   benches/load/auth_profile.sh [seconds] [path] [rows]
#
# Needs wrk and perf (Debian's `linux-perf`; `-e cpu-clock` works where hardware counters
# do not). Redis is not needed (the service runs degraded; /health does not touch it).
# For call stacks, build with `CARGO_PROFILE_RELEASE_DEBUG=line-tables-only` and read
# the kept profiles with `perf report --call-graph` (PERF_CALL_GRAPH=dwarf records them).
set -euo pipefail
seconds=${1:-8}
path=${2:-/health}
rows=${3:-25}
bin=${AUTH_BIN:-target/release/auth}
port=${PORT:-18482}
freq=${PERF_FREQ:-4999}
out=${OUT:-target/auth-profile}
mkdir -p "$out"

profile() {
  local layers=$1
  local data="$out/perf.$layers.data"
  AUTH_ADDR=127.0.0.1:$port JWT_SECRET=load-benchmark-secret-of-32-bytes-at-least \
    REDIS_URL=redis://127.0.0.1:1 SC_LAYERS=$layers RUST_LOG=warn \
    DATA_DIR="$out/data-$layers" "$bin" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  wrk -t1 -c16 -d1s "http://127.0.0.1:$port$path" >/dev/null # warm-up
  local graph=()
  if [[ -n ${PERF_CALL_GRAPH:-} ]]; then graph=(--call-graph "$PERF_CALL_GRAPH"); fi
  perf record -q -e cpu-clock -F "$freq" "${graph[@]}" -p "$pid" -o "$data" \
    -- sleep "$seconds" >/dev/null 2>&1 &
  local perf_pid=$!
  local requests
  requests=$(wrk -t1 -c16 -d"${seconds}s" "http://127.0.0.1:$port$path" |
    awk '/requests in/ {print $1}')
  wait "$perf_pid" || true
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  local samples # exact (the report's header rounds to thousands)
  samples=$(perf script -i "$data" -F period 2>/dev/null | wc -l)
  echo "$layers $requests $samples" >"$out/totals.$layers"
  # ns of CPU per request per function: share x samples / rate / requests.
  perf report -i "$data" --stdio --no-children --sort symbol -g none --percent-limit 0.1 \
    2>/dev/null | awk -v s="$samples" -v f="$freq" -v n="$requests" '
      /%/ && !/^#/ {
        pct = $1; sub(/%/, "", pct);
        name = ""; for (i = 3; i <= NF; i++) name = name (i > 3 ? " " : "") $i;
        sub(/ - -$/, "", name);
        printf "%.1f\t%s\n", pct / 100 * s / f * 1e9 / n, name
      }' >"$out/functions.$layers"
  awk -v l="$layers" -v s="$samples" -v f="$freq" -v n="$requests" -v d="$seconds" 'BEGIN {
    printf "layers=%-3s %8.0f req/s  %6.2f us server CPU per request (%d samples)\n",
      l, n / d, s / f * 1e6 / n, s }'
}

profile on
profile off
echo
echo "functions costing more with the layers on (ns of server CPU per request):"
printf "%8s %8s %8s  %s\n" on off delta function
awk -F'\t' 'NR == FNR { off[$2] = $1; next } { d = $1 - off[$2]; printf "%8.1f %8.1f %+8.1f  %s\n", $1, off[$2], d, $2 }' \
  "$out/functions.off" "$out/functions.on" | sort -k3 -g -r | head -n "$rows"
