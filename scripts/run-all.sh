#!/usr/bin/env bash
# Runs every executable script in a directory in name order; fails on the first failure.
# Usage: scripts/run-all.sh DIR
set -euo pipefail
dir=$1
shopt -s nullglob
ran=0
for s in "$dir"/*.sh; do
  [ -x "$s" ] || continue
  echo "==> $s"
  start=$(date +%s)
  "$s"
  echo "<== $s ok ($(( $(date +%s) - start )) s)"
  ran=$((ran + 1))
done
echo "$ran scripts passed in $dir"
