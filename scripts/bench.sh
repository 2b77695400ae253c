#!/usr/bin/env bash
# `make bench`: runs every benchmark in scripts/bench/ (scripts/run-all.sh), then prints one summary
# table of the rows they recorded (scripts/bench/lib.sh: bench_result). Exits non-zero when a
# benchmark failed to run or a row missed its target.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
GVB_BENCH_SUMMARY=$(mktemp /tmp/gvb-bench-summary.XXXXXX)
export GVB_BENCH_SUMMARY
trap 'rm -f "$GVB_BENCH_SUMMARY"' EXIT
"$here/run-all.sh" "$here/bench"
ran=$?
echo
echo "## Summary ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, commit $(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo unknown))"
echo
{
    printf 'benchmark\tmeasured\treference\tratio\ttarget\tresult\n'
    printf -- '---\t---\t---\t---\t---\t---\n'
    cat "$GVB_BENCH_SUMMARY"
} | awk -F'\t' '{ printf "|"; for (i = 1; i <= NF; i++) printf " %s |", $i; printf "\n" }'
missed=$(awk -F'\t' '$6 != "pass"' "$GVB_BENCH_SUMMARY" | wc -l)
rows=$(wc -l <"$GVB_BENCH_SUMMARY")
echo
echo "$((rows - missed)) of $rows targets met"
((ran == 0 && missed == 0))
