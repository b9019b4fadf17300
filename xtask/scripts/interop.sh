#!/usr/bin/env bash
# Interop against coturn (Debian package `coturn`), on loopback only:
#   1. coturn's turnutils_stunclient against `p2p serve` (RFC 5780 mode);
#   2. `p2p stun` (UDP, TCP) and `p2p nat-type --json` against coturn's
#      turnserver started with two listening IPs;
#   3. TURN: coturn's turnutils_uclient (UDP and TCP, Send/Data and
#      ChannelData, long-term and REST credentials, TCP relaying of RFC 6062,
#      moderate load) against `p2p serve` relaying to turnutils_peer, every
#      message back; the security checks (loopback refused by default, 401
#      for a wrong password, 486 over quota);
#   4. `p2p turn` (UDP/TCP, Send and ChannelData, RFC 6062 TCP relay)
#      against coturn's turnserver.
# Without coturn: skipped outside CI, a failure in CI (CI=true).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

if ! command -v turnserver >/dev/null 2>&1 || ! command -v turnutils_stunclient >/dev/null 2>&1 \
  || ! command -v turnutils_uclient >/dev/null 2>&1 || ! command -v turnutils_peer >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ]; then
    echo "interop: coturn (turnserver, turnutils_stunclient, turnutils_uclient, turnutils_peer) is required in CI" >&2
    exit 1
  fi
  echo "interop: skipped: coturn not installed (apt-get install coturn)"
  exit 0
fi

# Ports of our own, away from the defaults and below Linux's ephemeral range
# (32768-60999), so that no outgoing connection can hold one when we bind it.
P2P_PORT=24780
P2P_ALT_PORT=24781
COTURN_PORT=24790 # coturn's alternate port is this plus one
P2P_TURN_PORT=24800     # p2p serve with TURN (long-term users)
P2P_REST_PORT=24801     # p2p serve with TURN (REST API secret)
P2P_CLOSED_PORT=24802   # p2p serve with TURN and the default peer policy
PEER_PORT=24810         # turnutils_peer
COTURN_TURN_PORT=24820  # coturn's turnserver with a long-term user

WORK="$(mktemp -d "${TMPDIR:-/tmp}/p2p-interop.XXXXXX")"
PIDS=()
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cleanup() {
  local rc=$?
  stop_pids
  dump_logs_on_failure "$rc" interop
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
"$P2P" serve --no-signaling --listen "127.0.0.1:$P2P_PORT" --alt-listen "127.0.0.2:$P2P_ALT_PORT" \
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

# ---------------------------------------------------------------- 3. coturn's TURN client against us
"$P2P" serve --no-signaling --listen "127.0.0.1:$P2P_TURN_PORT" --realm example.org --user alice:secret \
  --allow-peer 127.0.0.0/8 --user-quota 0 --min-port 40000 --max-port 44999 \
  >"$WORK/p2p-turn.log" 2>&1 &
PIDS+=($!)
"$P2P" serve --no-signaling --listen "127.0.0.1:$P2P_REST_PORT" --realm example.org --auth-secret restsecret \
  --allow-peer 127.0.0.0/8 --user-quota 0 --min-port 45000 --max-port 45999 >"$WORK/p2p-turn-rest.log" 2>&1 &
PIDS+=($!)
"$P2P" serve --no-signaling --listen "127.0.0.1:$P2P_CLOSED_PORT" --realm example.org --user alice:secret \
  --user-quota 1 --min-port 46000 --max-port 46999 >"$WORK/p2p-turn-closed.log" 2>&1 &
PIDS+=($!)
turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" >"$WORK/turnutils-peer.log" 2>&1 &
PIDS+=($!)
for p in "$P2P_TURN_PORT" "$P2P_REST_PORT" "$P2P_CLOSED_PORT"; do wait_stun "127.0.0.1:$p"; done
expect "p2p serve says TURN is on" "TURN enabled: realm \"example.org\"" "$(cat "$WORK/p2p-turn.log")"

# uclient prints every line twice (stdout and its log): deduplicate, then
# read the final "tot_send_msgs=N, tot_recv_msgs=M" line (the one without msz=).
uclient() { # uclient NAME EXPECTED_MSGS ARGS...: every message sent comes back, none lost
  local name="$1" want="$2"
  shift 2
  local out totals sent recv
  out="$(timeout 120 turnutils_uclient "$@" 2>&1 | sort -u)" || fail "$name: turnutils_uclient exited with $?: $out"
  totals="$(grep -E 'start_mclient: tot_send_msgs=[0-9]+, tot_recv_msgs=[0-9]+' <<<"$out" | tail -n 1)"
  [ -n "$totals" ] || { echo "$out" >&2; fail "$name: no totals line"; }
  sent="$(sed -E 's/.*tot_send_msgs=([0-9]+).*/\1/' <<<"$totals")"
  recv="$(sed -E 's/.*tot_recv_msgs=([0-9]+).*/\1/' <<<"$totals")"
  echo "interop: $name: sent=$sent received=$recv"
  [ "$sent" = "$want" ] || { echo "$out" >&2; fail "$name: sent $sent messages, expected $want"; }
  [ "$recv" = "$sent" ] || { echo "$out" >&2; fail "$name: $recv of $sent messages came back"; }
  expect "$name: zero loss" "Total lost packets 0 \(0\.0+%\)" "$out"
}
UC=(-e 127.0.0.1 -r "$PEER_PORT" -n 100 -m 5 -l 120)
# -s: Send/Data indications. -c: no RTCP allocation (without it, each client
# allocates an RTP/RTCP pair with EVEN-PORT and a RESERVATION-TOKEN).
uclient "turnutils_uclient UDP Send/Data (5 clients x RTP+RTCP)" 600 -u alice -w secret -p "$P2P_TURN_PORT" -s "${UC[@]}" 127.0.0.1
uclient "turnutils_uclient TCP Send/Data (5 clients x RTP+RTCP)" 600 -u alice -w secret -p "$P2P_TURN_PORT" -t -s "${UC[@]}" 127.0.0.1
uclient "turnutils_uclient UDP Send/Data, no RTCP" 500 -u alice -w secret -p "$P2P_TURN_PORT" -s -c "${UC[@]}" 127.0.0.1
uclient "turnutils_uclient TCP Send/Data, no RTCP" 500 -u alice -w secret -p "$P2P_TURN_PORT" -t -s -c "${UC[@]}" 127.0.0.1
uclient "turnutils_uclient UDP REST credentials (-W)" 500 -u alice -W restsecret -p "$P2P_REST_PORT" -s -c "${UC[@]}" 127.0.0.1
uclient "turnutils_uclient TCP REST credentials (-W)" 500 -u alice -W restsecret -p "$P2P_REST_PORT" -t -s -c "${UC[@]}" 127.0.0.1
# Without -s, uclient sends ChannelData, on channel numbers from RFC 5766's
# 0x4000-0x7FFF (RFC 8656 reserves 0x5000-0x7FFF; p2p-turn accepts them for
# compatibility, and our own client picks 0x4000-0x4FFF).
uclient "turnutils_uclient UDP ChannelData, no RTCP" 500 -u alice -w secret -p "$P2P_TURN_PORT" -c "${UC[@]}" 127.0.0.1
uclient "turnutils_uclient TCP ChannelData, no RTCP" 500 -u alice -w secret -p "$P2P_TURN_PORT" -t -c "${UC[@]}" 127.0.0.1
uclient "turnutils_uclient UDP ChannelData (5 clients x RTP+RTCP)" 600 -u alice -w secret -p "$P2P_TURN_PORT" "${UC[@]}" 127.0.0.1
# -T: TCP allocations (RFC 6062), client to client: each pair's relayed TCP
# addresses Connect to each other (ConnectionAttempt, ConnectionBind on new
# data connections, raw bytes spliced). (-P, "passive TCP", loses half its
# messages against coturn's own turnserver as well: not checked.)
uclient "turnutils_uclient TCP relay (RFC 6062, -T)" 600 -u alice -w secret -p "$P2P_TURN_PORT" -T -n 100 -m 5 -l 120 127.0.0.1

# Security: wrong password, loopback peer by default, quota.
out="$(timeout 30 turnutils_uclient -u alice -w wrong -p "$P2P_TURN_PORT" -s -c -e 127.0.0.1 -r "$PEER_PORT" -n 5 127.0.0.1 2>&1 | sort -u || true)"
expect "turnutils_uclient with a wrong password is refused" "Cannot complete Allocation" "$out"
set +e
out="$("$P2P" turn "127.0.0.1:$P2P_TURN_PORT" --user alice:wrong --echo-peer --count 1 2>&1)"
rc=$?
set -e
[ "$rc" -ne 0 ] || fail "p2p turn with a wrong password succeeded"
expect "wrong password: 401, no hint which part was wrong" "allocation failed: Unauthorized \(error 401\)" "$out"
set +e
out="$("$P2P" turn "127.0.0.1:$P2P_TURN_PORT" --user mallory:secret --echo-peer --count 1 2>&1)"
set -e
expect "unknown user: the same plain 401" "allocation failed: Unauthorized \(error 401\)" "$out"
set +e
out="$("$P2P" turn "127.0.0.1:$P2P_CLOSED_PORT" --user alice:secret --peer "127.0.0.1:$PEER_PORT" --count 1 2>&1)"
set -e
expect "relay to 127.0.0.1 refused by default" "CreatePermission for 127\.0\.0\.1:$PEER_PORT failed: the server.s peer policy refuses this peer.s address \(403\)" "$out"
out="$(timeout 30 turnutils_uclient -u alice -w secret -p "$P2P_CLOSED_PORT" -s -c -e 127.0.0.1 -r "$PEER_PORT" -n 5 -m 2 127.0.0.1 2>&1 | sort -u || true)"
expect "turnutils_uclient: second allocation over --user-quota 1 gets 486" "error 486" "$out"

# Our client against us, both data paths and both transports.
for flags in "" "--channel" "--tcp" "--tcp --channel"; do
  # shellcheck disable=SC2086
  out="$("$P2P" turn "127.0.0.1:$P2P_TURN_PORT" --user alice:secret --peer "127.0.0.1:$PEER_PORT" --count 20 $flags)"
  expect "p2p turn $flags against p2p serve" "^echoed: +20$" "$out"
done
# RFC 6062 from our client: a TCP relayed address, Connect to a TCP echo
# peer, ConnectionBind on a second connection, raw bytes both ways.
out="$("$P2P" turn "127.0.0.1:$P2P_TURN_PORT" --user alice:secret --echo-peer --tcp-relay --count 20)"
expect "p2p turn --tcp-relay (RFC 6062) against p2p serve" "^echoed: +20$" "$out"

# ---------------------------------------------------------------- 4. our TURN client against coturn
turnserver -n --no-cli --no-tls --no-dtls --listening-ip 127.0.0.1 --listening-port "$COTURN_TURN_PORT" \
  --relay-ip 127.0.0.1 --min-port 47000 --max-port 47999 --lt-cred-mech --user alice:secret \
  --realm example.org --allow-loopback-peers --userdb "$WORK/turndb2" \
  --pidfile "$WORK/turnserver2.pid" --log-file "$WORK/turnserver2.log" --simple-log \
  >"$WORK/turnserver2-stdout.log" 2>&1 &
PIDS+=($!)
wait_stun "127.0.0.1:$COTURN_TURN_PORT"
for flags in "" "--channel" "--tcp" "--tcp --channel" "--tcp-relay"; do
  # shellcheck disable=SC2086
  out="$("$P2P" turn "127.0.0.1:$COTURN_TURN_PORT" --user alice:secret --echo-peer --count 20 $flags)"
  echo "$out" | sed 's/^/interop:   /'
  expect "p2p turn $flags against coturn: relayed address" "^relayed address: +127\.0\.0\.1:4[0-9]{4}$" "$out"
  expect "p2p turn $flags against coturn: every datagram echoed" "^echoed: +20$" "$out"
  expect "p2p turn $flags against coturn: allocation deleted" "^deleted: +yes$" "$out"
done

echo "interop: all passed"
