#!/usr/bin/env bash
# Run a command with CPU hogs beside it, RUNS times in a row: CI is a busy 2-core machine, and a test that passes
# only on an idle one is a flaky test. The hogs (`yes >/dev/null`) are killed by PID however the run ends.
#
# Usage: tools/stress.sh HOGS RUNS -- command [args...]     (what `make test-stress` runs)
# The command sees the hogs' PIDs in STRESS_HOG_PIDS.
set -u
if [ "$#" -lt 4 ] || [ "$3" != "--" ]; then
  echo "usage: $0 HOGS RUNS -- command [args...]" >&2
  exit 2
fi
hogs=$1
runs=$2
shift 3

pids=()
cleanup() {
  if [ "${#pids[@]}" -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null
    wait "${pids[@]}" 2>/dev/null
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for ((i = 0; i < hogs; i++)); do
  yes >/dev/null &
  pids+=("$!")
done
export STRESS_HOG_PIDS="${pids[*]}"
echo "==> $hogs CPU hogs beside the run (PIDs ${pids[*]}); $runs run(s)"
for ((run = 1; run <= runs; run++)); do
  echo "==> run $run of $runs"
  "$@"
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "==> run $run of $runs failed (exit $status) with $hogs CPU hogs"
    exit "$status"
  fi
done
echo "==> $runs run(s) green with $hogs CPU hogs"
