#!/usr/bin/env bash
# Two Chromium peers beside ours (issue 13, "Speed"): runs
# benches/browser/chromium_channel.mjs in headless Chromium (Debian package
# `chromium`, driven by playwright-core from npm; both installed like the
# browser suite installs them) and prints the medians of Chromium's setup
# (new RTCPeerConnection to the first message read) and of opening one more
# channel on a connected pair (createDataChannel plus one message until
# read), to set beside `channel_setup`'s figures for ours
# (`cargo xtask bench channel`). Loopback only; bounded: --runs (default
# 20, at most 200), every step times out after 10 s.
# Usage: bash xtask/scripts/bench-chromium-channel.sh [--runs N]
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

skip_or_fail() {
  echo "bench-chromium-channel: $1" >&2
  exit 1
}

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_browser bench-chromium-channel "$TARGET"

out="$(timeout 600 node benches/browser/chromium_channel.mjs --chromium "$CHROMIUM" "$@")"
echo "$out" >"$TARGET/bench-chromium-channel.json"
node -e '
const r = JSON.parse(process.argv[1]);
const med = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const f = (xs) => `median ${med(xs).toFixed(2)} ms (min ${Math.min(...xs).toFixed(2)}, max ${Math.max(...xs).toFixed(2)}; ${xs.length} runs)`;
console.log(`Chromium: ${r.version.match(/HeadlessChrome\/[0-9.]+/)}`);
console.log(`setup, new RTCPeerConnection x2 to the first message read: ${f(r.setup_ms)}`);
console.log(`open, createDataChannel + one message on a connected pair: ${f(r.open_ms)}`);
' "$out"
echo "load average: $(cut -d" " -f1-3 /proc/loadavg); raw figures in $TARGET/bench-chromium-channel.json"
