#!/usr/bin/env bash
# Two `shrink serve` replicas on 127.0.0.1 behind HAProxy (deploy/haproxy.cfg): requests through the balancer
# reach both; after one replica is killed, every request still succeeds. Run by tests/unit/test_serve.cc.
# Usage: deploy/test_haproxy.sh PATH/TO/shrink
set -euo pipefail
shrink="${1:?usage: deploy/test_haproxy.sh PATH/TO/shrink}"
here="$(cd "$(dirname "$0")" && pwd)"
command -v haproxy >/dev/null || { echo "haproxy is not installed (scripts/install-deps.sh installs it)" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is not installed" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/shrink-haproxy.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$shrink" synth --preset bert-tiny --out "$work/model" --json >/dev/null
for i in 1 2; do
  "$shrink" serve "$work/model" --port 0 --port-file "$work/port$i" --threads 1 --batch-wait-ms 0 \
    2>"$work/replica$i.log" &
  pids+=($!)
done
replica_pid1=${pids[0]}
for i in 1 2; do
  for _ in $(seq 300); do [ -s "$work/port$i" ] && break; sleep 0.1; done
  [ -s "$work/port$i" ] || { echo "replica $i did not start:"; cat "$work/replica$i.log"; exit 1; }
done
port1=$(cat "$work/port1"); port2=$(cat "$work/port2")
lb_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

SHRINK_LB_BIND="127.0.0.1:$lb_port" SHRINK_REPLICA1="127.0.0.1:$port1" SHRINK_REPLICA2="127.0.0.1:$port2" \
  haproxy -f "$here/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)

send() {  # prints the HTTP status of one classify request through the balancer
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
    -d '{"texts": ["a fine movie"]}' "http://127.0.0.1:$lb_port/v1/classify" || echo 000
}
served() {  # classify requests replica $1 answered, from its /metrics
  curl -s --max-time 5 "http://127.0.0.1:$1/metrics" |
    awk '/^shrink_requests_total\{route="classify",status="200"/ {n += $2} END {print n + 0}'
}

for _ in $(seq 100); do [ "$(send)" = 200 ] && break; sleep 0.1; done
# Both replicas must be up in HAProxy's view (rise 2 x inter 500ms) before the counts mean anything.
sleep 1.5
fails=0
for _ in $(seq 20); do [ "$(send)" = 200 ] || fails=$((fails + 1)); done
n1=$(served "$port1"); n2=$(served "$port2")
echo "before kill: replica1 $n1, replica2 $n2 requests, $fails failures"
[ "$fails" -eq 0 ] || { echo "FAIL: requests failed with both replicas up"; cat "$work/haproxy.log"; exit 1; }
[ "$n1" -gt 0 ] && [ "$n2" -gt 0 ] || { echo "FAIL: the balancer did not use both replicas"; exit 1; }

kill -9 "$replica_pid1"
before2=$(served "$port2")
fails=0
for _ in $(seq 20); do [ "$(send)" = 200 ] || fails=$((fails + 1)); done
after2=$(served "$port2")
echo "after killing replica1: replica2 answered $((after2 - before2)) of 20, $fails failures"
[ "$fails" -eq 0 ] || { echo "FAIL: requests failed after one replica died"; cat "$work/haproxy.log"; exit 1; }
[ $((after2 - before2)) -eq 20 ] || { echo "FAIL: replica2 did not take over all traffic"; exit 1; }
echo "haproxy: OK"
