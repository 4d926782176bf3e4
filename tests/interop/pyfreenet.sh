#!/usr/bin/env bash
# Interop with pyFreenet3, a real FCP client nobody here wrote.
#
# Usage: pyfreenet.sh HOST PORT
# Installs pyfreenet3 from PyPI into a temporary venv, then: fcpgenkey;
# fcpput/fcpget of a small file, 3 MB and 20 MB as CHK; KSK; SSK (insert
# with the private URI, fetch with the public one); GetCHKOnly gives the
# inserted CHK; a key nobody inserted fails cleanly (GetFailed 13/14/28).
# Prints "ok"/"FAIL" per check and exits non-zero if anything failed.
set -u
[ -n "${PYFREENET_DEBUG:-}" ] && set -x
HOST=$1; PORT=$2; T=${PYFREENET_TIMEOUT:-180}
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
python3 -m venv "$W/venv" >/dev/null || { echo "FAIL venv"; exit 1; }
"$W/venv/bin/pip" install -q --disable-pip-version-check 'pyfreenet3==0.7.0' || { echo "FAIL pip install pyfreenet3"; exit 1; }
B="$W/venv/bin"
fails=0
ok()  { echo "ok    $1"; }
bad() { fails=$((fails+1)); echo "FAIL  $1${2:+: $2}"; }
put() { timeout "$T" "$B/fcpput" -H "$HOST" -P "$PORT" -t "$T" "$@" 2>"$W/err" | tail -n 1; }
get() { timeout "$T" "$B/fcpget" -H "$HOST" -P "$PORT" -t "$T" "$@" 2>"$W/err"; }

check_roundtrip() { # label uri file
  local uri; uri=$(put "$2" "$3")
  case "$uri" in CHK@*|SSK@*|KSK@*|USK@*|freenet:*) ;; *) bad "$1 insert" "$(head -c 300 "$W/err")"; return;; esac
  if get "$uri" "$W/back" && cmp -s "$3" "$W/back"; then ok "$1"; else bad "$1 fetch" "$(head -c 300 "$W/err")"; fi
  rm -f "$W/back"
}

keys=$(timeout "$T" "$B/fcpgenkey" -H "$HOST" -P "$PORT" 2>"$W/err")
pub=$(echo "$keys" | sed -n 1p); priv=$(echo "$keys" | sed -n 2p)
case "$pub$priv" in SSK@*SSK@*) ok "fcpgenkey";; *) bad "fcpgenkey" "$(head -c 300 "$W/err")";; esac

printf 'hello from the interop test\n' >"$W/small"
head -c 3000000 /dev/urandom >"$W/3m"
head -c 20000000 /dev/urandom >"$W/20m"
check_roundtrip "CHK small" CHK@ "$W/small"
check_roundtrip "CHK 3 MB" CHK@ "$W/3m"
check_roundtrip "CHK 20 MB" CHK@ "$W/20m"
check_roundtrip "KSK" "KSK@interop-$$-$RANDOM" "$W/small"
if [ -n "$priv" ]; then
  put "${priv}page.txt" "$W/small" >/dev/null
  if get "${pub}page.txt" "$W/back" && cmp -s "$W/small" "$W/back"; then ok "SSK"; else bad "SSK" "$(head -c 300 "$W/err")"; fi
fi
only=$(put --chkonly CHK@ "$W/3m"); real=$(put CHK@ "$W/3m")
if [ -n "$only" ] && [ "$only" = "$real" ]; then ok "GetCHKOnly equals the inserted CHK"; else bad "GetCHKOnly" "'$only' vs '$real'"; fi

rk=$(head -c 32 /dev/urandom | base64 | tr '+/' '~-' | tr -d '=\n')
ck=$(head -c 32 /dev/urandom | base64 | tr '+/' '~-' | tr -d '=\n')
res=$(timeout "$T" "$B/python" - "$HOST" "$PORT" "CHK@$rk,$ck,AQEAAAA" <<'PY' 2>&1
import sys, fcp3
n = fcp3.FCPNode(host=sys.argv[1], port=int(sys.argv[2]), verbosity=0)
try:
    n.get(sys.argv[3], maxretries=0, timeout=60)
    print("fetched a key nobody inserted")
except Exception as e:
    info = getattr(e, "info", None)
    print("code=%s" % (info.get("Code") if isinstance(info, dict) else e))
n.shutdown()
PY
)
case "$res" in code=13|code=14|code=28) ok "missing key fails cleanly ($res)";; *) bad "missing key" "$res";; esac
# freesitemgr creates a site (USK edition 0), then updates it (edition 1);
# the new page is there and the old edition redirects (code 27) to the new.
mkdir -p "$W/home/.freesitemgr" "$W/site1"
printf '<html><body><h1>interop site</h1><a href="b.html">b</a></body></html>\n' >"$W/site1/index.html"
printf '<p>page b</p>\n' >"$W/site1/b.html"
fsm() { HOME="$W/home" FCP_HOST="$HOST" FCP_PORT="$PORT" timeout "$T" "$B/freesitemgr" "$@" 2>&1; }
# freesitemgr inserts on the node's global queue and returns; each later
# `update` collects the result. Wait (bounded) until it has nothing to do.
settle() { for _ in $(seq 60); do fsm update >>"$W/fsm.log"; grep -q "No update required" <(tail -n 3 "$W/fsm.log") && return 0; sleep 1; done; return 1; }
printf '\n' | fsm add "$W/site1" >"$W/fsm.log"
settle || bad "freesitemgr add did not settle" "$(tail -5 "$W/fsm.log")"
site=$(fsm list site1 | sed -n 's/^ *uri: //p')
case "$site" in USK@*/site1/*/) ;; *) bad "freesitemgr add" "$(tail -5 "$W/fsm.log")";; esac
base=$(printf '%s' "$site" | sed 's#/site1/[0-9]*/$#/site1/#')
if [ -n "$site" ] && get "${site}b.html" "$W/back" && cmp -s "$W/site1/b.html" "$W/back"; then ok "freesitemgr creates a site"; else bad "freesitemgr site fetch" "$(head -c 300 "$W/err")"; fi
printf '<p>page c</p>\n' >"$W/site1/c.html"
fsm update >>"$W/fsm.log"
settle || bad "freesitemgr update did not settle" "$(tail -5 "$W/fsm.log")"
# Edition 0 with fcpget, which follows the permanent redirect to the newest.
# freesitemgr may report "no update required" while its last manifest job
# is still on the global queue: allow it a bounded moment.
for _ in $(seq 20); do get "${base}0/c.html" "$W/back" && break; sleep 1; done
if cmp -s "$W/site1/c.html" "$W/back" && cmp -s "$W/site1/c.html" "$W/back"; then ok "freesitemgr updates the site (new page in the newest edition)"; else bad "freesitemgr update" "$(tail -5 "$W/fsm.log"; head -c 300 "$W/err")"; fi
redirect=$(timeout "$T" "$B/python" - "$HOST" "$PORT" "${base}0/c.html" <<'PY' 2>&1
import sys, fcp3
n = fcp3.FCPNode(host=sys.argv[1], port=int(sys.argv[2]), verbosity=0)
try:
    n.get(sys.argv[3], maxretries=0, timeout=60, followRedirect=False)
    print("no redirect")
except Exception as e:
    info = getattr(e, "info", None)
    print("code=%s" % (info.get("Code") if isinstance(info, dict) else e))
n.shutdown()
PY
)
case "$redirect" in code=27) ok "old edition redirects to the new one (code 27)";; *) bad "USK redirect" "$redirect";; esac

echo "$fails failed"
[ "$fails" -eq 0 ]
