#!/usr/bin/env bash
# Whole-process FCP benchmark: one node, a random file put then fetched
# through FCP with Lichen's own CLI; prints MiB/s each way, the node's CPU
# time for each (user + system, from /proc: steadier than wall clock on a
# shared machine) and the node's peak RSS (VmHWM) and idle RSS.
#
# Usage: scripts/bench-fcp.sh [MiB]   (default 100)
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-100}
cargo build -q --release -p lichen-node
BIN=target/release/lichen
W=$(mktemp -d); trap 'kill $NODE 2>/dev/null; rm -rf "$W"' EXIT
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
GW=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
# The client cache must hold the whole document twice over (data + check
# blocks) while the node has no peers.
printf '[store]\nclient_cache_bytes = %d\n' $((MIB * 1048576 * 3 + (64 << 20))) >"$W/config.toml"
$BIN node --config "$W/config.toml" --data-dir "$W/node" --fcp-port "$PORT" --gateway-port "$GW" --listen 127.0.0.1:0 2>"$W/log" &
NODE=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
sleep 1
rss() { awk "/^$1:/ {print \$2}" /proc/$NODE/status; }
cpu() { awk '{print $14 + $15}' /proc/$NODE/stat; }
IDLE=$(rss VmRSS)
head -c $((MIB * 1048576)) /dev/urandom >"$W/in"
export LICHEN_FCP=127.0.0.1:$PORT
c0=$(cpu)
t0=$(date +%s.%N)
URI=$($BIN put "$W/in")
t1=$(date +%s.%N)
c1=$(cpu)
$BIN get "$URI" -o "$W/out"
t2=$(date +%s.%N)
c2=$(cpu)
cmp "$W/in" "$W/out"
PEAK=$(rss VmHWM)
echo "method: one node on loopback, ${MIB} MiB of /dev/urandom, 'lichen put' then 'lichen get -o' over FCP (direct upload/AllData), wall clock per command, node CPU time and RSS from /proc"
awk -v m="$MIB" -v a="$t0" -v b="$t1" -v c="$t2" -v p="$((c1 - c0))" -v g="$((c2 - c1))" -v hz="$(getconf CLK_TCK)" \
  'BEGIN { printf "put: %.1f MiB/s (%.2f s; node CPU %.2f s)\nget: %.1f MiB/s (%.2f s; node CPU %.2f s)\n", m/(b-a), b-a, p/hz, m/(c-b), c-b, g/hz }'
echo "node RSS: idle $((IDLE / 1024)) MiB, peak $((PEAK / 1024)) MiB"
