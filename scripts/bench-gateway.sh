#!/usr/bin/env bash
# Gateway benchmark (docs/benchmarks.md, "## gateway").
#
#   scripts/bench-gateway.sh [path/to/lichen]     (default: target/release/lichen)
#
# Starts a node on spare loopback ports with a temporary data directory and
# measures, with a keep-alive HTTP/1.1 client (python3 http.client):
#   1. a 50-file site (index.html linking 49 files: pages, CSS, PNGs),
#      inserted with `lichen putsite`, so its blocks are in the local store:
#      time to first byte of index.html and total time to load all 50 files
#      one after another — cold (the gateway fetches each document from the
#      store, decodes and filters it) and warm (second load: the gateway's
#      finished-fetch files are reused, the filter runs again for HTML/CSS);
#   2. a 100 MiB file inserted with `lichen put`: throughput of
#      GET ?forcedownload, cold (fetch from the store into a temporary file,
#      then stream) and warm (stream the temporary file).
set -euo pipefail
LICHEN=${1:-target/release/lichen}
WORK=$(mktemp -d /tmp/lichen-bench-gw.XXXXXX)
NODE_PID=""
cleanup() {
  [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null || true
  [ -n "$NODE_PID" ] && wait "$NODE_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

read -r FCP GW NET < <(python3 -c '
import socket
s=[socket.socket() for _ in range(3)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
cat >"$WORK/config.toml" <<EOF
[store]
store_bytes = "1GiB"
cache_bytes = "256MiB"
client_cache_bytes = "2GiB"
EOF
"$LICHEN" node --config "$WORK/config.toml" --data-dir "$WORK/data" --fcp-port "$FCP" --gateway-port "$GW" \
  --listen "127.0.0.1:$NET" >"$WORK/node.log" 2>&1 &
NODE_PID=$!
export LICHEN_FCP="127.0.0.1:$FCP"
python3 - "http://127.0.0.1:$GW/" <<'EOF'
import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(sys.argv[1], timeout=2).read(); sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit("the gateway did not come up")
EOF

# The 50-file site: index.html + 19 pages + 10 stylesheets + 20 PNGs.
python3 - "$WORK/site" <<'EOF'
import os, sys, zlib, struct, random
d = sys.argv[1]; os.makedirs(d)
rnd = random.Random(1)
def png(path, w, h):
    raw = b"".join(b"\x00" + bytes(rnd.randrange(256) for _ in range(w * 3)) for _ in range(h))
    ch = lambda t, b: struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xffffffff)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + ch(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + ch(b"IDAT", zlib.compress(raw)) + ch(b"IEND", b""))
links = []
for i in range(19):
    body = "".join(f"<p>Paragraph {j} of page {i}: " + " ".join(rnd.choice(["lichen", "moss", "fern", "stone", "rain"]) for _ in range(40)) + "</p>\n" for j in range(20))
    open(f"{d}/page{i}.html", "w").write(f"<!DOCTYPE html><html><head><title>Page {i}</title><link rel=stylesheet href=style{i % 10}.css></head><body><h1>Page {i}</h1>{body}<a href=index.html>home</a></body></html>")
    links.append(f"page{i}.html")
for i in range(10):
    open(f"{d}/style{i}.css", "w").write("".join(f".c{j} {{ color: #{rnd.randrange(1 << 24):06x}; margin: {j}px; background: url(img{j % 20}.png) no-repeat }}\n" for j in range(100)))
    links.append(f"style{i}.css")
for i in range(20):
    png(f"{d}/img{i}.png", 48, 48)
    links.append(f"img{i}.png")
idx = "".join(f'<li><a href="{l}">{l}</a></li>' if l.endswith(".html") else (f'<li><img src="{l}"></li>' if l.endswith(".png") else f'<li><link rel=stylesheet href="{l}"></li>') for l in links)
open(f"{d}/index.html", "w").write(f"<!DOCTYPE html><html><head><title>Bench site</title></head><body><h1>Bench</h1><ul>{idx}</ul></body></html>")
open(f"{d}/files.txt", "w").write("\n".join(["index.html"] + links))
EOF
mv "$WORK/site/files.txt" "$WORK/files.txt"
KEYS=$("$LICHEN" genkey)
INSERT=$(echo "$KEYS" | head -1)
SITE_URI=$("$LICHEN" putsite "$WORK/site" --key "${INSERT%/}/bench-1" | tail -1)
SITE_URI="${SITE_URI%/}"
head -c $((100 << 20)) /dev/urandom >"$WORK/big.bin"
BIG_URI=$("$LICHEN" put "$WORK/big.bin" | tail -1)

python3 - "$GW" "$SITE_URI" "$BIG_URI" "$WORK/files.txt" <<'EOF'
import http.client, sys, time
port, site, big, files = int(sys.argv[1]), sys.argv[2], sys.argv[3], open(sys.argv[4]).read().split()
def get(conn, path, sink=False):
    t0 = time.perf_counter()
    conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
    r = conn.getresponse()
    first = r.read(1)
    ttfb = time.perf_counter() - t0
    n = len(first)
    while True:
        b = r.read(1 << 20)
        if not b: break
        n += len(b)
    assert r.status == 200, (path, r.status)
    return ttfb, time.perf_counter() - t0, n
def load_site(label):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    t0 = time.perf_counter()
    ttfb, _, _ = get(conn, f"/{site}/")
    total = 0
    for f in files[1:]:
        total += get(conn, f"/{site}/{f}")[2]
    el = time.perf_counter() - t0
    print(f"site {label}: index TTFB {ttfb*1000:.1f} ms, 50 files ({total} bytes) in {el*1000:.0f} ms ({el*1000/50:.1f} ms/file)")
load_site("cold (from the store)")
load_site("warm (gateway cache)")
for label in ["cold (fetch from the store + stream)", "warm (stream the fetched file)"]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    ttfb, el, n = get(conn, f"/{big.rstrip('/')}/?forcedownload")
    assert n == 100 << 20, n
    print(f"100 MiB {label}: TTFB {ttfb*1000:.0f} ms, {el:.2f} s, {n / el / (1 << 20):.0f} MiB/s")
EOF
