# Shared pieces of the suites in xtask/scripts (sourced, not run).
# shellcheck shell=bash
# Each suite keeps the PIDs it started in PIDS and its logs in $WORK/*.log.

# Stop every PID in PIDS: SIGTERM, up to 3 s to exit, then SIGKILL.
stop_pids() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# On failure, print the tail of every log in $WORK, labelled with the suite name.
dump_logs_on_failure() {
  local rc=$1 suite=$2 f
  if [ "$rc" -ne 0 ]; then
    echo "$suite: FAILED; logs:" >&2
    for f in "$WORK"/*.log; do
      [ -f "$f" ] || continue
      echo "--- $f" >&2
      tail -n 40 "$f" >&2 || true
    done
  fi
}

# ---------------------------------------------------------------- network namespaces
# For the NAT labs (nat-lab.sh, nat-lab-browser.sh). A lab keeps the
# namespaces it made in NAMESPACES and deletes them with del_namespaces on
# exit. Every link is created inside the lab's own namespaces (`ip -n NS link
# add … peer … netns NS2`): the host's interfaces and firewall are untouched.
# The layout (docs/nat-lab.md): a "public" namespace with bridge br0 on
# 203.0.113.0/24; router N with WAN 203.0.113.10N on that bridge (port swN in
# the public namespace) and a LAN bridge 10.0.N.1/24; clients on that LAN.

# in_ns NS CMD...: CMD inside namespace NS.
in_ns() {
  local ns=$1
  shift
  ip netns exec "$ns" "$@"
}

# new_ns NS: a fresh namespace with lo up. A namespace of that name left by a
# crashed run of the same lab is ours to replace.
new_ns() {
  ip netns del "$1" 2>/dev/null || true
  ip netns add "$1"
  NAMESPACES+=("$1")
  in_ns "$1" ip link set lo up
}

# del_namespaces: delete every namespace in NAMESPACES.
del_namespaces() {
  local ns
  for ns in "${NAMESPACES[@]}"; do
    ip netns del "$ns" 2>/dev/null || true
  done
}

# public_segment NS IP...: a new namespace NS with bridge br0 holding each IP/24.
public_segment() {
  local ns=$1 ip
  shift
  new_ns "$ns"
  in_ns "$ns" ip link add br0 type bridge
  in_ns "$ns" ip link set br0 up
  for ip in "$@"; do in_ns "$ns" ip addr add "$ip/24" dev br0; done
}

# add_router PUBLIC_NS ROUTER_NS N: a new router namespace, WAN 203.0.113.10N
# on PUBLIC_NS's br0, LAN bridge `lan` 10.0.N.1/24, forwarding on. No NAT
# yet (see nat) and no default route: a LAN is reachable only from its router.
# LAB_NET (default 203.0.113) changes the public /24 (nat-lab-portmap.sh:
# miniupnpd refuses to map ports on a reserved WAN address such as TEST-NET-3).
add_router() {
  local pub=$1 r=$2 n=$3 net=${LAB_NET:-203.0.113}
  new_ns "$r"
  ip -n "$r" link add wan type veth peer name "sw$n" netns "$pub"
  in_ns "$pub" ip link set "sw$n" master br0
  in_ns "$pub" ip link set "sw$n" up
  in_ns "$r" ip addr add "$net.10$n/24" dev wan
  in_ns "$r" ip link set wan up
  in_ns "$r" ip link add lan type bridge
  in_ns "$r" ip addr add "10.0.$n.1/24" dev lan
  in_ns "$r" ip link set lan up
  in_ns "$r" sysctl -qw net.ipv4.ip_forward=1
}

# add_client ROUTER_NS CLIENT_NS PORT IP GATEWAY: CLIENT_NS (created
# beforehand) on the router's LAN bridge through veth port PORT.
add_client() {
  ip -n "$1" link add "$3" type veth peer name eth0 netns "$2"
  in_ns "$1" ip link set "$3" master lan
  in_ns "$1" ip link set "$3" up
  in_ns "$2" ip addr add "$4/24" dev eth0
  in_ns "$2" ip link set eth0 up
  in_ns "$2" ip route add default via "$5"
}

# nat ROUTER_NS KIND [WAN_IP CLIENT_IP]: the router's NAT (docs/nat-lab.md):
#   eim-apdf   MASQUERADE: endpoint-independent mapping (port kept when
#              free), address-and-port-dependent filtering ("port-restricted cone")
#   apdm       MASQUERADE --random-fully: a fresh port per 5-tuple,
#              address-and-port-dependent mapping and filtering ("symmetric")
#   full-cone  UDP: SNAT to WAN_IP keeping the port, every inbound UDP packet
#              DNATed to CLIENT_IP: endpoint-independent mapping and
#              filtering; TCP masqueraded (ports kept when free) and every
#              inbound connection DNATed to CLIENT_IP too, as a 1:1 NAT
#              (or RFC 5382's endpoint-independent filtering) lets it in
# eim-apdf and apdm also drop new unsolicited UDP to the router's own WAN
# address: without that, a peer's check that arrives before the local peer's
# first packet leaves a conntrack entry that makes MASQUERADE pick another
# port for the local peer's packet to that peer (why: docs/nat-lab.md).
nat() {
  local r=$1 kind=$2
  case "$kind" in
  eim-apdf) in_ns "$r" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE ;;
  apdm) in_ns "$r" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE --random-fully ;;
  full-cone)
    in_ns "$r" iptables -t nat -A POSTROUTING -o wan -p udp -j SNAT --to-source "$3"
    in_ns "$r" iptables -t nat -A PREROUTING -i wan -p udp -j DNAT --to-destination "$4"
    in_ns "$r" iptables -t nat -A POSTROUTING -o wan -p tcp -j MASQUERADE
    in_ns "$r" iptables -t nat -A PREROUTING -i wan -p tcp -j DNAT --to-destination "$4"
    return 0
    ;;
  *)
    echo "nat: unknown kind $kind" >&2
    return 1
    ;;
  esac
  in_ns "$r" iptables -A INPUT -i wan -p udp -m conntrack --ctstate NEW -j DROP
}

# ---------------------------------------------------------------- a browser
# need_browser SUITE TARGET_DIR: headless Chromium ($CHROMIUM, default
# /usr/bin/chromium; apt-get installs Debian's `chromium` as root when it is
# missing), node, and playwright-core from npm in TARGET_DIR/browser-node (it
# downloads no browser). Exports CHROMIUM and NODE_PATH. Calls the suite's
# skip_or_fail REASON when something is missing and cannot be installed.
need_browser() {
  local suite=$1 target=$2
  mkdir -p "$target"
  CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
  if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "$suite: installing chromium (apt)"
      { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
        >"$target/browser-apt.log" 2>&1 \
        || { tail -n 20 "$target/browser-apt.log" >&2; skip_or_fail "cannot install chromium"; }
    fi
    [ -x "$CHROMIUM" ] || skip_or_fail "no Chromium at $CHROMIUM (apt-get install chromium)"
  fi
  export CHROMIUM
  command -v node >/dev/null 2>&1 || skip_or_fail "node not found (apt-get install nodejs npm)"
  local node_dir="$target/browser-node"
  if [ ! -f "$node_dir/node_modules/playwright-core/package.json" ]; then
    command -v npm >/dev/null 2>&1 || skip_or_fail "npm not found (apt-get install npm)"
    echo "$suite: installing playwright-core (npm) into $node_dir"
    mkdir -p "$node_dir"
    [ -f "$node_dir/package.json" ] || echo '{"private": true}' >"$node_dir/package.json"
    (cd "$node_dir" && npm install --no-audit --no-fund --silent playwright-core@1) \
      || skip_or_fail "cannot install playwright-core"
  fi
  export NODE_PATH="$node_dir/node_modules"
}
