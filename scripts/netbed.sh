#!/usr/bin/env bash
# The network-namespace test bed of issue 18 ("Real networks"): real
# `lichen` node processes in Linux network namespaces, behind NAT routers
# made with nftables, with bandwidth caps made with tc/tbf. Runs the tests
# of tests/tests/netns_nat.rs with their tables printed:
#
#   nat_matrix                    a public seed, a public helper and two
#                                 nodes behind each router kind (public,
#                                 cone, port-restricted, symmetric): their
#                                 reachability verdicts, then which pairs
#                                 link when made friends, and how fast;
#   twenty_nodes_half_behind_nat  20 nodes, 10 behind NAT: links by kind,
#                                 degrees, a document inserted behind one
#                                 NAT and fetched behind another; then a
#                                 public and a NATed node join and the
#                                 time to 1, 3, 5, 8, 10 peers is printed;
#   capped_fetch                  every link 4 MiB/s up, 16 MiB/s down; a
#                                 document (MiB below, default 100 here,
#                                 16 in CI) fetched by a late joiner: time
#                                 to first byte, MiB/s, bytes each node
#                                 sent during the fetch.
#
# Usage (as root: namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN):
#   scripts/netbed.sh [MiB] [test-name-filter]
#   scripts/netbed.sh 100            # all three, 100 MiB capped fetch
#   scripts/netbed.sh 16 nat_matrix  # the matrix only
#
# Everything is made inside namespaces named lnb<pid>-…, with addresses
# from 198.18.0.0/15 (public side) and 10.0.0.0/8 (behind the routers);
# nothing is added to this machine's own network namespace, and all of it
# is removed at the end (also on failure; a bed left by a killed run is
# removed by the next one). LICHEN_NETBED_KEEP=1 keeps the nodes' data and
# logs (the path is printed); LICHEN_IT_LOG=lichen=debug sets their log
# level. Method and figures: docs/running.md ("Testing behind NAT") and
# docs/benchmarks.md ("Real networks in namespaces").
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-100}
FILTER=${2:-}

if [ "$(id -u)" != 0 ]; then
  echo "netbed: run as root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)" >&2
  exit 1
fi
if ! command -v ip >/dev/null || ! command -v nft >/dev/null || ! command -v tc >/dev/null; then
  echo "netbed: installing iproute2 and nftables"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2 nftables
fi

echo "== machine: $(nproc) cores, kernel $(uname -r), $(ip -V), $(nft --version)"
echo "== build"
cargo build -q --release -p lichen-tests --tests
echo "== run (capped fetch of $MIB MiB)"
LICHEN_NETBED_FETCH_MIB=$MIB cargo test -q --release -p lichen-tests --test netns_nat -- \
  --nocapture --test-threads 1 $FILTER 2>&1 |
  grep -v -e '^running [0-9]* tests\?$' -e '^$'
