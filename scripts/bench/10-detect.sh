#!/usr/bin/env bash
# Benchmark: a full `detect` on a fixture host (issue 2: must take under 50 ms).
# 1. in process: hwdetect::detect on the fixture tree, many runs (crates/hwdetect/examples/detect_bench.rs);
# 2. whole CLI: `gpu-vm-bootstrap detect --json --host-root TREE` (process start included),
#    with hyperfine when installed, else a date +%s%N loop.
# Env: HOST (fixture name, default amd-b550m-gt710-rtx2070s), RUNS (default 200),
#      CARGO_TARGET_DIR (default target/).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/bench/lib.sh
. "$(pwd)/scripts/bench/lib.sh"

HOST="${HOST:-amd-b550m-gt710-rtx2070s}"
RUNS="${RUNS:-200}"
TARGET_MS=50
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

cargo build --quiet --release -p hwdetect --example detect_bench
cargo build --quiet --release -p gpu-vm-bootstrap --bin gpu-vm-bootstrap
BENCH="$TARGET_DIR/release/examples/detect_bench"
BIN="$TARGET_DIR/release/gpu-vm-bootstrap"

read -r mean min max runs < <("$BENCH" "$HOST" "$RUNS")

TREE="$(mktemp -d -t gvb-bench-XXXXXX)"
trap 'rm -rf "$TREE"' EXIT
"$BENCH" --build-into "$TREE" "$HOST"

if command -v hyperfine >/dev/null 2>&1; then
    hyperfine --runs "$RUNS" --warmup 5 --style none --export-csv "$TREE.csv" \
        "$BIN detect --json --host-root $TREE" >/dev/null 2>&1
    # CSV columns: command,mean,stddev,median,user,system,min,max (seconds).
    cli_mean="$(awk -F, 'NR == 2 { printf "%.3f", $2 * 1000 }' "$TREE.csv")"
    rm -f "$TREE.csv"
    how="hyperfine"
else
    "$BIN" detect --json --host-root "$TREE" >/dev/null 2>&1
    start="$(date +%s%N)"
    for _ in $(seq "$RUNS"); do
        "$BIN" detect --json --host-root "$TREE" >/dev/null 2>&1
    done
    end="$(date +%s%N)"
    cli_mean="$(awk -v s="$start" -v e="$end" -v n="$RUNS" 'BEGIN { printf "%.3f", (e - s) / n / 1e6 }')"
    how="date loop"
fi

printf '%-44s %10s %10s\n' "benchmark (host $HOST)" "measured" "target"
printf '%-44s %8s ms %7s ms   (min %s, max %s, %s runs)\n' "detect, in process (mean)" "$mean" "< $TARGET_MS" "$min" "$max" "$runs"
printf '%-44s %8s ms %7s ms   (%s)\n' "gpu-vm-bootstrap detect --json (mean)" "$cli_mean" "< $TARGET_MS" "$how"

bench_result "detect, in process ($HOST)" "$mean ms" "-" "< $TARGET_MS ms" "$(bench_check "$mean < $TARGET_MS")"
bench_result "gpu-vm-bootstrap detect --json ($HOST)" "$cli_mean ms" "-" "< $TARGET_MS ms" "$(bench_check "$cli_mean < $TARGET_MS")"
fail=0
awk -v m="$mean" -v t="$TARGET_MS" 'BEGIN { exit !(m < t) }' || { echo "FAIL: in-process detect mean $mean ms >= $TARGET_MS ms"; fail=1; }
awk -v m="$cli_mean" -v t="$TARGET_MS" 'BEGIN { exit !(m < t) }' || { echo "FAIL: CLI detect mean $cli_mean ms >= $TARGET_MS ms"; fail=1; }
exit "$fail"
