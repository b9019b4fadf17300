# Part 2 of the NAT lab: ICE between two `p2p connect` peers through the
# routers nat-lab.sh built (sourced by it, not run alone: it uses its
# namespaces, server, PIDS, WORK, in_ns, fail and flush_conntrack).
#
# Each scenario starts two peers in a fresh signaling room, each sending a
# few lines and waiting for one (`--expect-lines 1`), with `--json` progress
# on stderr; the `"ready"` line says which path ICE selected and how long
# ICE took (from the moment the other peer was known). The kinds of both
# ends are asserted, per peer. Every scenario is bounded by
# SCENARIO_TIMEOUT seconds.

STUN_URI="stun:$SERVER"
TURN_UDP="turn:$SERVER"
TURN_TCP="turn:$SERVER?transport=tcp"
TURNS="turns:$SERVER_IP:$TLS_PORT"
# A peer that may use everything: STUN and TURN over UDP.
ALL_SERVERS=(--stun "$STUN_URI" --turn "$TURN_UDP" --turn-user "$TURN_USER" --turn-password "$TURN_PASS")

ICE_ROWS=()
ICE_FAILED=()
SCENARIO=0

# json_field LINE KEY -> the value of a flat "KEY":"value" or "KEY":number.
json_field() {
  sed -nE "s/.*\"$2\":\"?([^\",}]*)\"?.*/\1/p" <<<"$1"
}

# start_peer TAG NS ROOM ARGS... : a peer in the background; its pid goes in
# PEER_PIDS, its stdout in $WORK/TAG.out and its JSON progress in $WORK/TAG.log.
# Its stdin is a line every 100 ms (p2p connect reads them once connected):
# datagrams may be lost, so one line is not enough. It exits 0 once a line
# has arrived and 500 ms more have passed (--expect-lines 1, --linger-ms).
start_peer() {
  local tag=$1 ns=$2 room=$3
  shift 3
  # (SIGPIPE ignored: the writer ends quietly once the peer exits.)
  { trap '' PIPE
    for i in $(seq 1 "$((SCENARIO_TIMEOUT * 10))"); do
      echo "hello from $tag, line $i" || break
      sleep 0.1
    done 2>/dev/null; } | timeout "$SCENARIO_TIMEOUT" ip netns exec "$ns" "$P2P" connect \
    --signaling "$SIGNALING" --room "$room" --name "$tag" --json --expect-lines 1 \
    --peer-timeout 30 --timeout 30 "$@" >"$WORK/$tag.out" 2>"$WORK/$tag.log" &
  PEER_PIDS+=($!)
  PIDS+=($!)
}

# kinds_ok WANT LOCAL REMOTE REMOTE_ADDRESS: whether a peer's selected pair fits WANT:
#   host    our end host; the peer's end host, or peer-reflexive with an
#           address on our LAN (10.0.1.0/24): the peer's check arrived
#           before its trickled host candidate, so ICE learnt that
#           address as prflx first (RFC 8445 7.3.1.3)
#   direct  no relay at either end and not host-to-host: srflx/prflx
#   relay   at least one end relayed
#   local-relay  our own end relayed (the peer behind the UDP-blocking firewall)
#   any     whatever path (the lossy link: it must connect and carry lines)
#   host6   host to host over IPv6 (global addresses: no NAT66), the peer's
#           end host or, learnt from its check first, prflx
#   tcp     no relay at either end, and the path runs over TCP (ICE-TCP):
#           TRANSPORT (the fifth argument) is tcp
#   tcp-srflx  tcp, to the peer's server-reflexive (passive) candidate
kinds_ok() {
  case "$1" in
  tcp) [ "$2" != relay ] && [ "$3" != relay ] && [ -n "$2" ] && [ "$5" = tcp ] ;;
  tcp-srflx) [ "$2" != relay ] && [ "$3" = srflx ] && [ "$5" = tcp ] ;;
  any) [ -n "$2" ] && [ -n "$3" ] ;;
  host) [ "$2" = host ] && { [ "$3" = host ] || { [ "$3" = prflx ] && [[ "$4" == 10.0.1.* ]]; }; } ;;
  direct)
    case "$2" in srflx | prflx) ;; *) return 1 ;; esac
    case "$3" in srflx | prflx) ;; *) return 1 ;; esac
    ;;
  relay) [ "$2" = relay ] || [ "$3" = relay ] ;;
  local-relay) [ "$2" = relay ] ;;
  host6)
    [ "$2" = host ] && { [ "$3" = host ] || [ "$3" = prflx ]; } && [[ "$4" == "[2001:db8:"* ]]
    ;;
  *) return 1 ;;
  esac
}

# scenario NAME NATS WANT_A WANT_B "A_NS A_ARGS..." "B_NS B_ARGS..."
# Runs both peers, asserts each one's path kinds and adds a table row.
scenario() {
  local name=$1 nats=$2 want_a=$3 want_b=$4
  local -a a b
  # Split the peers' argument strings on spaces, without globbing (a URI has a '?').
  set -f
  a=($5)
  b=($6)
  set +f
  SCENARIO=$((SCENARIO + 1))
  local room="natlab-$SCENARIO-$$" ta="s$SCENARIO-a" tb="s$SCENARIO-b"
  flush_conntrack
  PEER_PIDS=()
  local t0=$SECONDS
  start_peer "$ta" "${a[0]}" "$room" "${a[@]:1}"
  start_peer "$tb" "${b[0]}" "$room" "${b[@]:1}"
  local rc_a=0 rc_b=0
  wait "${PEER_PIDS[0]}" || rc_a=$?
  wait "${PEER_PIDS[1]}" || rc_b=$?
  local verdict=ok why=""
  local ra rb path_a path_b ms_a ms_b kinds
  # The time is the "ready" line's; the path is the last one selected
  # ("ready", or a later "path_changed" when ICE moved to a better pair).
  ra="$(grep '"event":"ready"' "$WORK/$ta.log" | tail -n 1 || true)"
  rb="$(grep '"event":"ready"' "$WORK/$tb.log" | tail -n 1 || true)"
  ms_a="$(json_field "$ra" ice_ms)"
  ms_b="$(json_field "$rb" ice_ms)"
  path_a="$(json_field "$ra" local_kind)-$(json_field "$ra" remote_kind)"
  path_b="$(json_field "$rb" local_kind)-$(json_field "$rb" remote_kind)"
  if [ -n "$ra" ]; then
    ra="$(grep -E '"event":"(ready|path_changed)"' "$WORK/$ta.log" | tail -n 1)"
    rb="$(grep -E '"event":"(ready|path_changed)"' "$WORK/$tb.log" | tail -n 1 || true)"
    local last_a last_b
    last_a="$(json_field "$ra" local_kind)-$(json_field "$ra" remote_kind)"
    last_b="$(json_field "$rb" local_kind)-$(json_field "$rb" remote_kind)"
    [ "$last_a" = "$path_a" ] || path_a="$path_a then $last_a"
    [ "$last_b" = "$path_b" ] || path_b="$path_b then $last_b"
  fi
  if [ -z "$ra" ] || [ -z "$rb" ]; then
    verdict=FAIL
    why="no path (exit codes $rc_a/$rc_b)"
  elif [ "$rc_a" != 0 ] || [ "$rc_b" != 0 ]; then
    verdict=FAIL
    why="a peer failed after connecting (exit codes $rc_a/$rc_b; lines lost?)"
  else
    if ! kinds_ok "$want_a" "$(json_field "$ra" local_kind)" "$(json_field "$ra" remote_kind)" \
      "$(json_field "$ra" remote_address)" "$(json_field "$ra" transport)"; then
      verdict=FAIL
      why="peer A on $path_a, wanted $want_a"
    fi
    if ! kinds_ok "$want_b" "$(json_field "$rb" local_kind)" "$(json_field "$rb" remote_kind)" \
      "$(json_field "$rb" remote_address)" "$(json_field "$rb" transport)"; then
      verdict=FAIL
      why="${why:+$why; }peer B on $path_b, wanted $want_b"
    fi
  fi
  if [ "$(json_field "$ra" transport)" = tcp ]; then path_a="$path_a over TCP"; fi
  if [ "$(json_field "$rb" transport)" = tcp ]; then path_b="$path_b over TCP"; fi
  kinds="A $path_a, B $path_b"
  [ "$verdict" = ok ] || ICE_FAILED+=("$name: $why")
  echo "nat-lab: scenario $SCENARIO ($name): $kinds; ICE ${ms_a:-?}/${ms_b:-?} ms; $verdict${why:+ ($why)} [$((SECONDS - t0)) s]"
  if [ "$verdict" != ok ]; then
    echo "--- peer A ($ta) progress:"
    cat "$WORK/$ta.log"
    echo "--- peer B ($tb) progress:"
    cat "$WORK/$tb.log"
  fi >&2
  ICE_ROWS+=("$(printf '| %s | %s | %s / %s | %s | %s / %s | %s |' "$name" "$nats" "$want_a" "$want_b" \
    "$kinds" "${ms_a:--}" "${ms_b:--}" "$verdict")")
}

# skipped NAME NATS REASON: a row that says loudly that it did not run.
skipped() {
  echo "nat-lab: SKIPPED: $1: $3" >&2
  ICE_ROWS+=("$(printf '| %s | %s | - | - | - | skipped: %s |' "$1" "$2" "$3")")
  if [ "${CI:-}" = "true" ]; then
    ICE_FAILED+=("$1: skipped in CI: $3")
  fi
}

# ---------------------------------------------------------------- link impairment
# impair ROUTER...: 50 ms delay and 5% loss each way on each router's WAN
# link, with tc netem when the kernel has it (qdiscs on the router's wan and
# on its bridge port in the server namespace); otherwise with NFQUEUE and
# nfq-delay.py (the same delay and loss, applied in the router's mangle
# table to packets leaving and entering wan). IMPAIR_HOW says which.
IMPAIR_HOW=""
IMPAIR_SKIP=""
impair() {
  local n
  if in_ns "$PREFIX-r$1" tc qdisc add dev wan root netem delay 50ms loss 5% 2>"$WORK/netem.log"; then
    in_ns "$PREFIX-r$1" tc qdisc del dev wan root
    for n in "$@"; do
      in_ns "$PREFIX-r$n" tc qdisc add dev wan root netem delay 50ms loss 5%
      in_ns "$SRV" tc qdisc add dev "sw$n" root netem delay 50ms loss 5%
    done
    IMPAIR_HOW="tc netem"
    return 0
  fi
  local why
  why="tc netem unavailable: $(tr -d '\n' <"$WORK/netem.log")"
  if ! command -v python3 >/dev/null 2>&1; then
    IMPAIR_SKIP="$why; python3 (for the NFQUEUE delayer) not installed either"
    return 1
  fi
  echo "nat-lab: $why; emulating it with NFQUEUE (xtask/scripts/nfq-delay.py)"
  for n in "$@"; do
    in_ns "$PREFIX-r$n" iptables -t mangle -A POSTROUTING -o wan -j NFQUEUE --queue-num 0
    in_ns "$PREFIX-r$n" iptables -t mangle -A PREROUTING -i wan -j NFQUEUE --queue-num 0
    # Not through in_ns: $! must be the delayer itself (ip netns exec execs it).
    ip netns exec "$PREFIX-r$n" python3 "$(dirname "${BASH_SOURCE[0]}")/nfq-delay.py" 0 50 5 \
      >"$WORK/nfq-delay-r$n.log" 2>&1 &
    PIDS+=($!)
    IMPAIR_PIDS+=($!)
  done
  local _i
  for n in "$@"; do
    for _i in $(seq 1 50); do
      grep -q "nfq-delay: queue" "$WORK/nfq-delay-r$n.log" && break
      sleep 0.1
    done
    grep -q "nfq-delay: queue" "$WORK/nfq-delay-r$n.log" \
      || { IMPAIR_SKIP="$why; nfq-delay.py failed: $(cat "$WORK/nfq-delay-r$n.log")"; return 1; }
  done
  IMPAIR_HOW="NFQUEUE: no sch_netem"
}
IMPAIR_PIDS=()
unimpair() {
  local n pid
  for n in "$@"; do
    in_ns "$PREFIX-r$n" tc qdisc del dev wan root 2>/dev/null || true
    in_ns "$SRV" tc qdisc del dev "sw$n" root 2>/dev/null || true
    in_ns "$PREFIX-r$n" iptables -t mangle -F 2>/dev/null || true
  done
  for pid in "${IMPAIR_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
}

# ---------------------------------------------------------------- the scenarios
C="$PREFIX-c"
echo
echo "nat-lab: ICE scenarios (each bounded by ${SCENARIO_TIMEOUT} s)"

scenario "same LAN" "none (both behind r1)" host host \
  "${C}1 ${ALL_SERVERS[*]}" "${C}1b ${ALL_SERVERS[*]}"

scenario "EIM x EIM (hole punching)" "r1 EIM/APDF x r4 EIM/APDF" direct direct \
  "${C}1 ${ALL_SERVERS[*]}" "${C}4 ${ALL_SERVERS[*]}"

scenario "EIM/EIF x APDM" "r3 EIM/EIF x r2 APDM" direct direct \
  "${C}3 ${ALL_SERVERS[*]}" "${C}2 ${ALL_SERVERS[*]}"

scenario "EIM/APDF x APDM, ICE alone (--no-hardnat)" "r1 EIM/APDF x r2 APDM" relay relay \
  "${C}1 ${ALL_SERVERS[*]} --no-hardnat" "${C}2 ${ALL_SERVERS[*]} --no-hardnat"

# Birthday probing (issue 14): the same NATs; both peers announce the
# p2phardnat ICE option, learn their mapping from the server and its
# RFC 5780 alternate address, and 3 s after the checks began, with only the
# relay working, the peer behind --random-fully opens 256 sockets towards
# the MASQUERADE peer's srflx while that one probes random ports of its IP.
# The peers stay 15 s so that the probed path replaces the relay (the last
# path is asserted). Both join orders (the second peer offers and controls).
HARDNAT_STAY="--linger-ms 15000"
scenario "EIM/APDF x APDM, birthday probing" "r1 EIM/APDF x r2 APDM" direct direct \
  "${C}1 ${ALL_SERVERS[*]} $HARDNAT_STAY" "${C}2 ${ALL_SERVERS[*]} $HARDNAT_STAY"
scenario "APDM x EIM/APDF, birthday probing" "r2 APDM x r1 EIM/APDF" direct direct \
  "${C}2 ${ALL_SERVERS[*]} $HARDNAT_STAY" "${C}1 ${ALL_SERVERS[*]} $HARDNAT_STAY"

scenario "APDM x APDM" "r2 APDM x r5 APDM" relay relay \
  "${C}2 ${ALL_SERVERS[*]}" "${C}5 ${ALL_SERVERS[*]}"

scenario "UDP blocked, TURN over TCP" "r6 no UDP x r4 EIM/APDF" local-relay relay \
  "${C}6 --turn $TURN_TCP --turn-user $TURN_USER --turn-password $TURN_PASS" \
  "${C}4 ${ALL_SERVERS[*]}"

# ICE-TCP (RFC 6544): the client behind router 6 (no UDP; TCP out to the
# server and to p2plab-pub) and a public peer, both with --ice-tcp. The
# client also has TURN over TCP, yet ends direct: its active candidate
# connects to the public peer's passive one (the peer sees the router's
# mapped address as prflx).
scenario "UDP blocked, ICE-TCP direct" "r6 no UDP x public host" tcp tcp \
  "${C}6 --ice-tcp --turn $TURN_TCP --turn-user $TURN_USER --turn-password $TURN_PASS" \
  "$PREFIX-pub --ice-tcp ${ALL_SERVERS[*]}"

# ICE-TCP server-reflexive (RFC 6544): the client behind router 3 (a 1:1
# NAT for TCP) asks the STUN server over TCP from its passive candidate's
# own port and signals the mapping as a srflx passive candidate; the
# UDP-blocked client (no TURN at all) connects to it: direct over TCP.
scenario "UDP blocked x 1:1 NAT, ICE-TCP to srflx" "r6 no UDP x r3 1:1" tcp-srflx tcp \
  "${C}6 --ice-tcp" \
  "${C}3 --ice-tcp --stun $STUN_URI"

# IPv6 through two RFC 6092 firewalls: each peer's first check opens its
# own firewall for the other's address. Dual-stack peers (their IPv4 behind
# EIM/APDF NATs: srflx would work too) end on IPv6 host ↔ host; IPv6-only
# peers (bound to their IPv6 address, STUN over IPv6) too.
STUN6="stun:[$SERVER6]:3478"
scenario "IPv6 firewalls, dual-stack peers" "r1 x r4: NAT44 + IPv6 firewall" host6 host6 \
  "${C}1s ${ALL_SERVERS[*]} --stun $STUN6" "${C}4s ${ALL_SERVERS[*]} --stun $STUN6"
scenario "IPv6 firewalls, IPv6-only peers" "r1 x r4: IPv6 firewall" host6 host6 \
  "${C}1s --bind 2001:db8:1::4 --stun $STUN6" "${C}4s --bind 2001:db8:4::4 --stun $STUN6"
# Dual-family TURN (RFC 8656 ADDITIONAL-ADDRESS-FAMILY): an IPv4-only peer
# (behind r4) allocates over IPv4 and gets an IPv6 relayed address too (the
# server relays from 203.0.113.10 and 2001:db8:10::10); an IPv6-only peer
# with no TURN server reaches it there from its host address.
scenario "IPv4-only x IPv6-only, dual-family TURN" "r4 EIM/APDF x r1 IPv6 firewall" local-relay relay \
  "${C}4 ${ALL_SERVERS[*]}" "${C}1s --bind 2001:db8:1::4 --stun $STUN6"

if [ -z "$TLS_SKIP" ]; then
  scenario "UDP blocked, TURN over TLS" "r6 no UDP x r4 EIM/APDF" local-relay relay \
    "${C}6 --turn $TURNS --turn-user $TURN_USER --turn-password $TURN_PASS --tls-ca $WORK/ca.pem" \
    "${C}4 ${ALL_SERVERS[*]}"
else
  skipped "UDP blocked, TURN over TLS" "r6 no UDP x r4 EIM/APDF" "$TLS_SKIP"
fi

# Any path: usually srflx-srflx, but the controlling agent nominates the best
# valid pair 1 s after the first one (IceConfig::nomination_timeout), and on
# this link the relayed pair is sometimes valid and the srflx one not yet.
if impair 1 4; then
  scenario "50 ms + 5% loss per NAT link ($IMPAIR_HOW)" "r1 EIM/APDF x r4 EIM/APDF" any any \
    "${C}1 ${ALL_SERVERS[*]}" "${C}4 ${ALL_SERVERS[*]}"
else
  skipped "50 ms + 5% loss per NAT link" "r1 EIM/APDF x r4 EIM/APDF" "$IMPAIR_SKIP"
fi
unimpair 1 4

echo
echo "| scenario | NATs | wanted (A / B) | selected pair (local-remote) | ICE ms (A / B) | verdict |"
echo "|---|---|---|---|---|---|"
for row in "${ICE_ROWS[@]}"; do echo "$row"; done
echo
if [ "${#ICE_FAILED[@]}" -gt 0 ]; then
  for f in "${ICE_FAILED[@]}"; do echo "nat-lab: FAIL: $f" >&2; done
  fail "${#ICE_FAILED[@]} ICE scenario(s) failed"
fi
