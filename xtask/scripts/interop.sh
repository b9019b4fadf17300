#!/usr/bin/env bash
# Interop against coturn (Debian package `coturn`), on loopback only:
#   1. coturn's turnutils_stunclient against `p2p serve` (RFC 5780 mode);
#   2. `p2p stun` (UDP, TCP) and `p2p nat-type --json` against coturn's
#      turnserver started with two listening IPs.
# Without coturn: skipped outside CI, a failure in CI (CI=true).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

if ! command -v turnserver >/dev/null 2>&1 || ! command -v turnutils_stunclient >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ]; then
    echo "interop: coturn (turnserver, turnutils_stunclient) is required in CI" >&2
    exit 1
  fi
  echo "interop: skipped: coturn not installed (apt-get install coturn)"
  exit 0
fi

# Ports of our own, away from the defaults so that nothing collides.
P2P_PORT=34780
P2P_ALT_PORT=34781
COTURN_PORT=34790 # coturn's alternate port is this plus one

WORK="$(mktemp -d "${TMPDIR:-/tmp}/p2p-interop.XXXXXX")"
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    # Up to 3 s to stop on SIGTERM, then SIGKILL.
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    echo "interop: FAILED; logs:" >&2
    for f in "$WORK"/*.log; do
      [ -f "$f" ] || continue
      echo "--- $f" >&2
      tail -n 40 "$f" >&2 || true
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "interop: building p2p"
cargo build --quiet -p p2p-cli
P2P="${CARGO_TARGET_DIR:-$ROOT/target}/debug/p2p"
[ -x "$P2P" ] || { echo "interop: $P2P not found" >&2; exit 1; }

fail() { echo "interop: FAIL: $*" >&2; exit 1; }
expect() { # expect NAME PATTERN TEXT
  if ! grep -qE -- "$2" <<<"$3"; then
    echo "$3" >&2
    fail "$1: output lacks /$2/"
  fi
  echo "interop: ok: $1"
}
wait_stun() { # wait until ADDR answers a Binding request (at most ~10 s)
  for _ in $(seq 1 50); do
    if "$P2P" stun "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  fail "no STUN server answering on $1"
}

# ---------------------------------------------------------------- 1. coturn's client against us
"$P2P" serve --listen "127.0.0.1:$P2P_PORT" --alt-listen "127.0.0.2:$P2P_ALT_PORT" \
  --software "p2p-interop" >"$WORK/p2p-serve.log" 2>&1 &
PIDS+=($!)
wait_stun "127.0.0.1:$P2P_PORT"

out="$(timeout 20 turnutils_stunclient -p "$P2P_PORT" 127.0.0.1 2>&1)" || fail "turnutils_stunclient exited with $?: $out"
expect "turnutils_stunclient: mapped address" "UDP reflexive addr: 127\.0\.0\.1:[0-9]+" "$out"
expect "turnutils_stunclient: OTHER-ADDRESS" "Other addr: : 127\.0\.0\.2:$P2P_ALT_PORT" "$out"
expect "turnutils_stunclient: CHANGE-REQUEST answered from the alternate" "Response origin: : 127\.0\.0\.2:$P2P_ALT_PORT" "$out"

out="$("$P2P" nat-type --json "127.0.0.1:$P2P_PORT")"
expect "p2p nat-type against p2p serve" '"nat":false,"mapping":"endpoint-independent","filtering":"endpoint-independent"' "$out"

# ---------------------------------------------------------------- 2. our client against coturn
turnserver -n --no-cli --no-tls --no-dtls \
  --listening-ip 127.0.0.1 --listening-ip 127.0.0.2 --listening-port "$COTURN_PORT" \
  --relay-ip 127.0.0.1 --userdb "$WORK/turndb" --pidfile "$WORK/turnserver.pid" \
  --log-file "$WORK/turnserver.log" --simple-log >"$WORK/turnserver-stdout.log" 2>&1 &
PIDS+=($!)
wait_stun "127.0.0.1:$COTURN_PORT"

out="$("$P2P" stun "127.0.0.1:$COTURN_PORT")"
expect "p2p stun (UDP) against coturn: mapped address" "^mapped address: 127\.0\.0\.1:[0-9]+" "$out"
expect "p2p stun (UDP) against coturn: SOFTWARE" "^software: +Coturn" "$out"
expect "p2p stun (UDP) against coturn: rtt" "^rtt: +[0-9.]+ ms" "$out"

out="$("$P2P" stun --tcp "127.0.0.1:$COTURN_PORT")"
expect "p2p stun --tcp against coturn" "^mapped address: 127\.0\.0\.1:[0-9]+" "$out"

out="$("$P2P" nat-type --json "127.0.0.1:$COTURN_PORT")"
echo "interop: p2p nat-type --json 127.0.0.1:$COTURN_PORT -> $out"
expect "p2p nat-type against coturn: OTHER-ADDRESS" "\"other_address\":\"127\.0\.0\.2:$((COTURN_PORT + 1))\"" "$out"
expect "p2p nat-type against coturn: no NAT on loopback" '"nat":false' "$out"
expect "p2p nat-type against coturn: mapping" '"mapping":"endpoint-independent"' "$out"
expect "p2p nat-type against coturn: filtering" '"filtering":"endpoint-independent"' "$out"

echo "interop: all passed"
