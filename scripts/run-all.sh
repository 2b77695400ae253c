#!/usr/bin/env bash
# Runs every executable script in a directory in name order. A failure does not stop the run:
# later scripts (the lab teardown among them) still run, and the exit status reports failures.
# Usage: scripts/run-all.sh DIR
set -uo pipefail
dir=$1
shopt -s nullglob
passed=0
failed=()
for s in "$dir"/*.sh; do
  [ -x "$s" ] || continue
  echo "==> $s"
  start=$(date +%s)
  if "$s"; then
    echo "<== $s ok ($(( $(date +%s) - start )) s)"
    passed=$((passed + 1))
  else
    echo "<== $s FAILED ($(( $(date +%s) - start )) s)"
    failed+=("$s")
  fi
done
echo "$passed passed, ${#failed[@]} failed"
for f in "${failed[@]}"; do echo "failed: $f"; done
[ ${#failed[@]} -eq 0 ]
