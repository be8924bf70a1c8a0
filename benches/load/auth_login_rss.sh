#!/usr/bin/env bash
# Peak memory of the auth service under a burst of logins: starts a private redis-server
# and the auth service, registers one account, sends LOGINS logins from CLIENTS
# concurrent clients, and prints the service's peak RSS (VmHWM) and the logins' p50/p99.
#
#   cargo build --release -p secureconnect-examples --bin auth
#   benches/load/auth_login_rss.sh [logins] [clients]
set -euo pipefail
logins=${1:-400}
clients=${2:-64}
bin=${AUTH_BIN:-target/release/auth}
port=${PORT:-18491}
redis_port=${REDIS_PORT:-18492}
data=$(mktemp -d)
redis-server --port "$redis_port" --save '' --appendonly no --daemonize no >/dev/null &
redis=$!
trap 'kill "$redis" "${pid:-}" 2>/dev/null || true; rm -rf "$data"' EXIT
AUTH_ADDR=127.0.0.1:$port JWT_SECRET=load-benchmark-secret-of-32-bytes-at-least \
  REDIS_URL=redis://127.0.0.1:$redis_port/ DATA_DIR=$data RUST_LOG=warn "$bin" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done
python3 - "$port" "$logins" "$clients" <<'PY'
import json, sys, time, urllib.request, urllib.error
from concurrent.futures import ThreadPoolExecutor
port, logins, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
base = f"http://127.0.0.1:{port}"
body = json.dumps({"email": "burst@example.org", "password": "correct horse battery"}).encode()
def post(path):
    req = urllib.request.Request(base + path, data=body, headers={"content-type": "application/json"})
    start = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    return status, time.monotonic() - start
assert post("/v1/auth/register")[0] == 201
with ThreadPoolExecutor(clients) as pool:
    results = list(pool.map(lambda _: post("/v1/auth/login"), range(logins)))
ok = sorted(t for s, t in results if s == 200)
statuses = {}
for s, _ in results:
    statuses[s] = statuses.get(s, 0) + 1
def pct(p):
    return ok[min(len(ok) - 1, int(p * len(ok)))] * 1000 if ok else float("nan")
print(f"statuses {statuses}  login p50 {pct(0.5):.0f} ms  p99 {pct(0.99):.0f} ms")
PY
echo "peak RSS: $(awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$pid/status")"
