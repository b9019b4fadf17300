#!/usr/bin/env bash
# An independent WebRTC stack against ours, on loopback only: aiortc (PyPI;
# its own ICE, DTLS through OpenSSL, SCTP and DCEP, all in Python) meets
# `p2p connect` through `p2p serve`'s signaling server (xtask/scripts/
# aiortc_peer.py speaks docs/signaling.md) and they chat over an encrypted
# data channel:
#   1. aiortc waits, p2p offers and opens the channel: lines both ways, then
#      one 64 KiB message each way, and each side's view of the other's DTLS
#      fingerprint must match what that side announced;
#   2. p2p waits, aiortc offers and opens the channel;
#   3. both relay-only through our TURN server (static user);
#   4. aiortc announces an altered fingerprint: p2p must refuse the
#      handshake (exit 1, "fingerprint") and nothing may be delivered.
# aiortc is installed with pip into a venv under the target dir. Without
# python3 or PyPI: skipped outside CI, a failure in CI (CI=true).
set -euo pipefail
SECONDS=0

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
mkdir -p "$TARGET"

skip_or_fail() {
  if [ "${CI:-}" = "true" ]; then
    echo "aiortc: $1 (required in CI)" >&2
    exit 1
  fi
  echo "aiortc: skipped: $1"
  exit 0
}

# ---------------------------------------------------------------- tools
VENV="$TARGET/aiortc-venv"
PY="$VENV/bin/python"
if ! "$PY" -c 'import aiortc, websockets' 2>/dev/null; then
  command -v python3 >/dev/null 2>&1 || skip_or_fail "python3 not found"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "aiortc: installing python3-venv (apt)"
      export DEBIAN_FRONTEND=noninteractive
      { apt-get update -qq && apt-get install -y -qq python3-venv; } >"$TARGET/aiortc-apt.log" 2>&1 \
        || skip_or_fail "cannot install python3-venv"
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV" || skip_or_fail "python3 -m venv failed"
  fi
  echo "aiortc: installing aiortc and websockets (pip) into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'aiortc>=1.9,<2' 'websockets>=12' \
    >"$TARGET/aiortc-pip.log" 2>&1 \
    || { tail -n 20 "$TARGET/aiortc-pip.log" >&2; skip_or_fail "cannot install aiortc"; }
fi
echo "aiortc: $("$PY" -c 'import aiortc; print("aiortc", aiortc.__version__)')"

# ---------------------------------------------------------------- the server
# Ports of our own, away from the other suites'.
STUN_PORT=24920
SIGNALING_PORT=24921
TURN_USER="aiortc"
TURN_PASSWORD="aiortc-$$-$RANDOM"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/p2p-aiortc.XXXXXX")"
PIDS=()
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cleanup() {
  local rc=$?
  stop_pids
  dump_logs_on_failure "$rc" aiortc
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "aiortc: building p2p"
cargo build --quiet -p p2p-cli
P2P="$TARGET/debug/p2p"

# Relaying between two peers on this host means relaying to loopback peers,
# which the default policy refuses.
"$P2P" serve --listen "127.0.0.1:$STUN_PORT" --signaling "127.0.0.1:$SIGNALING_PORT" \
  --realm p2p.test --user "$TURN_USER:$TURN_PASSWORD" --allow-peer 127.0.0.0/8 \
  --log info >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
PIDS+=("$SERVE_PID")
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$SIGNALING_PORT") 2>/dev/null && break
  kill -0 "$SERVE_PID" 2>/dev/null || { echo "aiortc: p2p serve died" >&2; exit 1; }
  sleep 0.1
done
SIGNALING="ws://127.0.0.1:$SIGNALING_PORT"

# ---------------------------------------------------------------- the runs
LINES=3
BIG=65536
passed=0

# The lines `p2p connect` sends: LINES short ones, then one of BIG bytes.
# (With --expect-lines, the end of stdin does not close the connection.)
INPUT="$WORK/input"
for i in $(seq 1 "$LINES"); do echo "from p2p $i"; done >"$INPUT"
{ head -c "$BIG" /dev/zero | tr '\0' 'p'; echo; } >>"$INPUT"

# field FILE KEY: the value of KEY in the `ready` JSON line of p2p's stderr.
field() {
  grep -m1 '"event":"ready"' "$1" | sed -n "s/.*\"$2\":\"\\([^\"]*\\)\".*/\\1/p"
}

# run NAME ORDER [relay]: ORDER is aiortc-first or p2p-first.
run() {
  local name="$1" order="$2" relay="${3:-}" room="aiortc-$1-$$"
  local aargs=(--signaling "$SIGNALING" --room "$room" --send "$LINES" --big "$BIG"
    --expect $((LINES + 1)) --timeout 30)
  local pargs=(--signaling "$SIGNALING" --room "$room" --expect-lines $((LINES + 1)) --json)
  if [ -n "$relay" ]; then
    aargs+=(--turn "turn:127.0.0.1:$STUN_PORT" --turn-user "$TURN_USER" --turn-password "$TURN_PASSWORD")
    pargs+=(--relay-only --turn "turn:127.0.0.1:$STUN_PORT" --turn-user "$TURN_USER"
      --turn-password "$TURN_PASSWORD")
  else
    aargs+=(--loopback)
    pargs+=(--bind 127.0.0.1 --loopback)
  fi
  echo "aiortc: $name"
  local apid ppid
  if [ "$order" = aiortc-first ]; then
    "$PY" xtask/scripts/aiortc_peer.py "${aargs[@]}" >"$WORK/$name-aiortc.out" 2>"$WORK/$name-aiortc.log" &
    apid=$!
    sleep 1.5
    timeout 90 "$P2P" connect "${pargs[@]}" <"$INPUT" >"$WORK/$name-p2p.out" 2>"$WORK/$name-p2p.log" &
    ppid=$!
  else
    timeout 90 "$P2P" connect "${pargs[@]}" <"$INPUT" >"$WORK/$name-p2p.out" 2>"$WORK/$name-p2p.log" &
    ppid=$!
    sleep 1.5
    "$PY" xtask/scripts/aiortc_peer.py "${aargs[@]}" >"$WORK/$name-aiortc.out" 2>"$WORK/$name-aiortc.log" &
    apid=$!
  fi
  local arc=0 prc=0
  wait "$apid" || arc=$?
  wait "$ppid" || prc=$?
  fail() {
    echo "aiortc: $name: $1" >&2
    for f in "$WORK/$name"-*; do echo "--- $f" >&2; cut -c1-300 "$f" | tail -n 30 >&2; done
    exit 1
  }
  [ "$arc" = 0 ] || fail "aiortc exited $arc"
  [ "$prc" = 0 ] || fail "p2p connect exited $prc"
  # What each side received, in full.
  local want_p2p want_aio
  want_aio="$(printf '%s\n' 'from p2p 1' 'from p2p 2' 'from p2p 3')"
  [ "$(grep '^recv ' "$WORK/$name-aiortc.out" | sed 's/^recv //')" = "$want_aio" ] \
    || fail "aiortc did not receive p2p's lines in order"
  local big_sha
  big_sha="$(head -c "$BIG" /dev/zero | tr '\0' 'p' | sha256sum | cut -d' ' -f1)"
  grep -qx "recv-long $BIG $big_sha" "$WORK/$name-aiortc.out" || fail "aiortc did not receive p2p's $BIG-byte message intact"
  want_p2p="$(printf '%s\n' 'from aiortc 0' 'from aiortc 1' 'from aiortc 2')"
  [ "$(head -n "$LINES" "$WORK/$name-p2p.out")" = "$want_p2p" ] \
    || fail "p2p did not receive aiortc's lines in order"
  big_sha="$(head -c "$BIG" /dev/zero | tr '\0' 'b' | sha256sum | cut -d' ' -f1)"
  [ "$(sed -n "$((LINES + 1))p" "$WORK/$name-p2p.out" | tr -d '\n' | sha256sum | cut -d' ' -f1)" = "$big_sha" ] \
    || fail "p2p did not receive aiortc's $BIG-byte message intact"
  # The keys: what aiortc saw in the handshake is what p2p announced, and
  # the other way round.
  local p2p_local p2p_remote aio_local aio_remote
  p2p_local="$(field "$WORK/$name-p2p.log" local_fingerprint)"
  p2p_remote="$(field "$WORK/$name-p2p.log" remote_fingerprint)"
  aio_local="$(sed -n 's/^local-fingerprint //p' "$WORK/$name-aiortc.out")"
  aio_remote="$(sed -n 's/^remote-fingerprint //p' "$WORK/$name-aiortc.out")"
  [ -n "$p2p_local" ] && [ "$p2p_local" = "$aio_remote" ] \
    || fail "aiortc saw certificate '$aio_remote', p2p announced '$p2p_local'"
  [ -n "$aio_local" ] && [ "$aio_local" = "$p2p_remote" ] \
    || fail "p2p saw fingerprint '$p2p_remote', aiortc announced '$aio_local'"
  local kinds
  kinds="$(field "$WORK/$name-p2p.log" local_kind)/$(field "$WORK/$name-p2p.log" remote_kind)"
  if [ -n "$relay" ] && [ "$kinds" != "relay/relay" ]; then
    fail "relay-only run selected $kinds"
  fi
  echo "aiortc: ok: $name after ${SECONDS}s ($kinds, fingerprints agree, $LINES lines and $BIG bytes each way)"
  passed=$((passed + 1))
}
run "aiortc-first" aiortc-first
run "p2p-first" p2p-first
run "relay" aiortc-first relay

# An altered fingerprint: p2p must refuse the certificate aiortc presents.
name="altered-fingerprint"
room="aiortc-$name-$$"
echo "aiortc: $name"
"$PY" xtask/scripts/aiortc_peer.py --signaling "$SIGNALING" --room "$room" --loopback --tamper \
  --send 1 --timeout 30 >"$WORK/$name-aiortc.out" 2>"$WORK/$name-aiortc.log" &
apid=$!
sleep 1.5
prc=0
timeout 90 "$P2P" connect --signaling "$SIGNALING" --room "$room" --bind 127.0.0.1 \
  --loopback --expect-lines 1 --json <"$INPUT" >"$WORK/$name-p2p.out" 2>"$WORK/$name-p2p.log" || prc=$?
arc=0
wait "$apid" || arc=$?
if [ "$prc" != 1 ] || ! grep -q '"event":"failed".*fingerprint' "$WORK/$name-p2p.log" || [ -s "$WORK/$name-p2p.out" ] \
  || [ "$arc" != 0 ]; then
  echo "aiortc: $name: p2p exited $prc (want 1 with a fingerprint error), aiortc $arc" >&2
  tail -n 20 "$WORK/$name-p2p.log" "$WORK/$name-aiortc.log" >&2
  exit 1
fi
echo "aiortc: ok: $name after ${SECONDS}s (p2p: $(grep -m1 '"event":"failed"' "$WORK/$name-p2p.log" | cut -c1-200))"
passed=$((passed + 1))
echo "aiortc: $passed passed, 0 failed"
