# shellcheck shell=bash
# Shared by the benchmarks in this directory (sourced, not run: it is not executable, so
# scripts/run-all.sh skips it).
#
# bench_result NAME MEASURED REFERENCE TARGET PASS [RATIO]
#   Records one row of the summary table that `make bench` prints at the end (scripts/bench.sh):
#   what was measured, what it was compared with (another tool's figure, or "-"), the ratio of
#   the two (or "-"), the target, and pass/fail. PASS is "pass" or "FAIL". Without
#   GVB_BENCH_SUMMARY (a script run on its own) the row is only printed.
bench_result() {
    local name=$1 measured=$2 reference=$3 target=$4 pass=$5 ratio=${6:--}
    printf 'summary: %s | %s | %s | %s | %s | %s\n' "$name" "$measured" "$reference" "$ratio" "$target" "$pass"
    if [[ -n ${GVB_BENCH_SUMMARY:-} ]]; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$measured" "$reference" "$ratio" "$target" "$pass" >>"$GVB_BENCH_SUMMARY"
    fi
}

# bench_check EXPR: "pass" when the awk expression EXPR is true, else "FAIL".
bench_check() { awk "BEGIN { exit !($1) }" && echo pass || echo FAIL; }

# median / spread of numbers on stdin (one per line).
bench_median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
bench_spread() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print hi - lo }'; }
