#!/usr/bin/env bash
# Isle vs etcd 3.4 (CP, etcd v3 gRPC) and Isle vs Redis (AP, RESP) in one run on this machine:
# 3-node `isle local`, 3-node etcd from Debian, one redis-server with appendfsync always — all on
# loopback, defaults, fsync on — then the JSON lines rendered into docs/performance.md.
#
# usage: docs/perf/run.sh [SECONDS_PER_PHASE]      (needs etcd, redis-server; installs neither)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-5}
out=$(mktemp -d /tmp/isle-perf.XXXXXX)
echo "working in $out"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

cargo build --release -p isle --locked
isle=target/release/isle

# Isle: three nodes on 47401.. (peer), 48401.. (HTTP), 49401.. (gRPC), 50401.. (RESP).
"$isle" local --nodes 3 --base-port 47400 --dir "$out/isle" >"$out/isle-local.log" 2>&1 &
pids+=($!)

# etcd 3.4: three members, clients on 52379/52381/52383.
cluster="e1=http://127.0.0.1:52380,e2=http://127.0.0.1:52382,e3=http://127.0.0.1:52384"
for i in 1 2 3; do
  client=$((52377 + 2 * i)); peer=$((52378 + 2 * i))
  etcd --name "e$i" --data-dir "$out/etcd$i" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token isle-perf \
    >"$out/etcd$i.log" 2>&1 &
  pids+=($!)
done

# Redis: one server, every write fsynced before it is answered.
redis-server --port 56379 --save '' --appendonly yes --appendfsync always --dir "$out" \
  >"$out/redis.log" 2>&1 &
pids+=($!)

wait_for() { # wait_for WHAT COMMAND...
  local what=$1; shift
  for _ in $(seq 1 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timed out waiting for $what" >&2; exit 1
}
wait_for "Isle's CP leader" sh -c "curl -sf http://127.0.0.1:48401/v1/status | grep -q '\"leader\":[0-9]'"
wait_for "etcd" env ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:52379 put perf-probe 1
wait_for "redis" redis-cli -p 56379 ping

isle_grpc=127.0.0.1:49401,127.0.0.1:49402,127.0.0.1:49403
etcd_grpc=127.0.0.1:52379,127.0.0.1:52381,127.0.0.1:52383
isle_resp=127.0.0.1:50401,127.0.0.1:50402,127.0.0.1:50403

"$isle" bench cp --endpoints "$isle_grpc" --against "$etcd_grpc" --seconds "$seconds" \
  --clients 1,16,64,256 --ops put,get,sget,txn --json-out "$out/cp.jsonl" | grep -v '^{'
"$isle" bench ap --endpoints "$isle_resp" --against 127.0.0.1:56379 --against-name redis \
  --seconds "$seconds" --clients 1,50,256 --ops set,get,incr,sadd --json-out "$out/ap.jsonl" \
  | grep -v '^{'

# Disk work per node: fsyncs and batches of the Raft log (from /metrics).
for port in 48401 48402 48403; do
  curl -sf "http://127.0.0.1:$port/metrics" | grep -E '^isle_cp_(log|read_index|linearizable)' \
    | sed "s/^/node :$port /"
done | tee "$out/metrics.txt"

python3 docs/perf/render.py "$out/cp.jsonl" "$out/ap.jsonl" >"$out/tables.md"
python3 docs/perf/update_doc.py docs/performance.md "$out/tables.md" "$out/metrics.txt"
echo "docs/performance.md updated from $out"
