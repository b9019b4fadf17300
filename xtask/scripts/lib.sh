# Shared pieces of the suites in xtask/scripts (sourced, not run).
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
