#!/usr/bin/env bash
# Whole-process network benchmark on loopback: `lichen testnet` starts N real
# node processes wired as one opennet through a seed; a random document is
# inserted through FCP on node 1, then fetched through FCP on a node that
# joins afterwards (empty store, so every block crosses the network), and
# through the HTTP gateway of a second late node (time to first byte).
# Prints the method, MiB/s each way, the nodes' RSS idle and at peak.
#
# Usage: scripts/bench-testnet.sh [NODES] [MiB] [BASE_PORT]   (default 20 100 31000)
#        scripts/bench-testnet.sh --idle NODES [BASE_PORT]    (RSS of N idle nodes only)
#        TUNNEL_HOPS=0 scripts/bench-testnet.sh ...           (own requests without tunnels; default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE_ONLY=0
if [ "${1:-}" = "--idle" ]; then IDLE_ONLY=1; shift; fi
NODES=${1:-20}
if [ "$IDLE_ONLY" = 1 ]; then MIB=0; BASE=${2:-31000}; else MIB=${2:-100}; BASE=${3:-31000}; fi
HOPS=${TUNNEL_HOPS:-2}
cargo build -q --release -p lichen-node
BIN=$PWD/target/release/lichen
W=$(mktemp -d)
TN=""
LATE=()
cleanup() {
  for p in "${LATE[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$TN" ] && kill "$TN" 2>/dev/null && wait "$TN" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT

peers() { $BIN status --fcp "127.0.0.1:$1" 2>/dev/null | awk '/^Peers:/ {print $2}'; }
now() { date +%s.%N; }
# RSS figures (kB) of the node processes: field VmRSS or VmHWM.
rss_of() { for p in $(pgrep -P "$TN") "${LATE[@]}"; do awk "/^$1:/ {print \$2}" "/proc/$p/status" 2>/dev/null; done; }
summary() { sort -n | awk '{a[NR]=$1; s+=$1} END {printf "n=%d total %.0f MiB, per node median %.1f MiB, max %.1f MiB", NR, s/1024, a[int((NR+1)/2)]/1024, a[NR]/1024}'; }

t_start=$(now)
$BIN testnet --nodes "$NODES" --data-dir "$W/net" --base-port "$BASE" --tunnel-hops "$HOPS" >"$W/testnet.out" 2>&1 &
TN=$!
# Every node answers FCP and has a peer (bounded wait: 5 s per node + 60 s).
deadline=$(( $(date +%s) + 60 + 5 * NODES ))
for i in $(seq 0 $((NODES - 1))); do
  until [ "$(peers $((BASE + 3 * i)))" != "" ] && [ "$(peers $((BASE + 3 * i)))" -gt 0 ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "node $i never got a peer"; tail "$W/net/node-$i.log"; exit 1; }
    sleep 0.5
  done
done
t_up=$(now)
sleep 5
echo "method: 'lichen testnet --nodes $NODES --tunnel-hops $HOPS' (one process per node, opennet through node 0, loopback), RSS from /proc/PID/status"
awk -v a="$t_start" -v b="$t_up" -v n="$NODES" 'BEGIN { printf "all %d nodes up with peers after %.1f s\n", n, b-a }'
echo "peers per node: $(for i in $(seq 0 $((NODES - 1))); do printf '%s ' "$(peers $((BASE + 3 * i)))"; done)"
echo "idle RSS (VmRSS): $(rss_of VmRSS | summary)"
if [ "$IDLE_ONLY" = 1 ]; then exit 0; fi

head -c $((MIB * 1048576)) /dev/urandom >"$W/in"
t0=$(now)
URI=$($BIN put "$W/in" --fcp "127.0.0.1:$((BASE + 3))" | tail -n 1)
t1=$(now)
case "$URI" in CHK@*) ;; *) echo "insert failed: $URI"; exit 1;; esac

# Two late joiners with empty stores, through the seed.
start_late() { # index
  local p=$((BASE + 3 * $1))
  $BIN node --data-dir "$W/late-$1" --fcp-port "$p" --gateway-port $((p + 1)) \
    --listen "127.0.0.1:$((p + 2))" --config "$W/net/seeded.toml" >"$W/late-$1.log" 2>&1 &
  LATE+=($!)
  local d=$(( $(date +%s) + 60 ))
  until [ "$(peers "$p")" != "" ] && [ "$(peers "$p")" -gt 0 ]; do
    [ "$(date +%s)" -lt "$d" ] || { echo "late node $1 got no peer"; exit 1; }
    sleep 0.5
  done
}
start_late "$NODES"
start_late $((NODES + 1))
sleep 3
B=$((BASE + 3 * NODES))
C=$((BASE + 3 * (NODES + 1)))
echo "late node B has $(peers $B) peers, late node C has $(peers $C)"
# Bytes over loopback during the fetch (/proc/net/dev counts each byte
# once): minus the document the FCP client reads, what the links carried.
lo_bytes() { awk '/^ *lo:/ {sub(/^ *lo:/, ""); print $1}' /proc/net/dev; }
lo1=$(lo_bytes)
t2=$(now)
$BIN get "$URI" -o "$W/out" --fcp "127.0.0.1:$B"
t3=$(now)
lo2=$(lo_bytes)
cmp "$W/in" "$W/out"
# No Sec-Fetch-Dest header: the gateway holds the answer until the document
# is complete (at most 60 s), then streams it.
# `?forcedownload`: a document of unknown type is otherwise answered with a
# warning page first (docs/gateway.md).
GWT=$(curl -s -L -o "$W/out2" -w '%{time_starttransfer} %{time_total}' "http://127.0.0.1:$((C + 1))/$URI/?forcedownload")
if ! cmp -s "$W/in" "$W/out2"; then
  echo "gateway fetch on C did not return the document (not complete within the gateway's 60 s wait?)"
  GWT="nan nan"
fi
echo "document: $MIB MiB of /dev/urandom; insert with 'lichen put' on node 1, fetch with 'lichen get' on late node B, and with curl through late node C's gateway"
awk -v m="$MIB" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v g="$GWT" 'BEGIN {
  split(g, x, " ");
  printf "insert on node 1:        %.1f MiB/s (%.2f s)\n", m/(b-a), b-a;
  printf "fetch on B (FCP):        %.1f MiB/s (%.2f s; lichen get: ReturnType=chunked, data written as it is decoded)\n", m/(d-c), d-c;
  printf "fetch on C (gateway):    %.1f MiB/s (%.2f s), time to first byte %.3f s\n", m/x[2], x[2], x[1] }'
awk -v m="$MIB" -v a="$lo1" -v b="$lo2" 'BEGIN {
  printf "links during B'"'"'s fetch: %.0f MiB over loopback, %.1f crossings per byte of the document (the hops decide the fetch figure)\n", (b-a)/1048576 - m, ((b-a)/1048576 - m)/m }'
echo "peak RSS (VmHWM) over the run: $(rss_of VmHWM | summary)"
