#!/usr/bin/env bash
# Benchmark: `gpu-vm-bootstrap plan` on a fixture host (issue 3: must take under 300 ms).
# The whole CLI is timed (process start, detection, reading /etc, planning, diff rendering),
# with hyperfine when installed, else a date +%s%N loop. For reference, side by side:
# `detect --json` alone (the facts part of plan) and `netplan generate --root-dir` on the
# planned bridge (the tool the plan's bridge step feeds).
# Env: HOST (fixture name, default amd-b550m-gt710-rtx2070s), RUNS (default 50),
#      CARGO_TARGET_DIR (default target/).
set -euo pipefail
cd "$(dirname "$0")/../.."

HOST="${HOST:-amd-b550m-gt710-rtx2070s}"
RUNS="${RUNS:-50}"
TARGET_MS=300
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

cargo build --quiet --release -p gpu-vm-bootstrap --bin gpu-vm-bootstrap --example fixture-tree
BIN="$TARGET_DIR/release/gpu-vm-bootstrap"
TREE="$(mktemp -d -t gvb-bench-plan-XXXXXX)"
trap 'rm -rf "$TREE" "$TREE.csv"' EXIT
"$TARGET_DIR/release/examples/fixture-tree" "$HOST" "$TREE" dhcp

# mean_ms CMD...: mean wall time of CMD over $RUNS runs, in ms.
mean_ms() {
    if command -v hyperfine >/dev/null 2>&1; then
        hyperfine --runs "$RUNS" --warmup 3 --style none --export-csv "$TREE.csv" \
            "$(printf '%q ' "$@")" >/dev/null 2>&1
        awk -F, 'NR == 2 { printf "%.1f", $2 * 1000 }' "$TREE.csv"
    else
        "$@" >/dev/null 2>&1 || true
        local start end
        start="$(date +%s%N)"
        for _ in $(seq "$RUNS"); do "$@" >/dev/null 2>&1 || true; done
        end="$(date +%s%N)"
        awk -v s="$start" -v e="$end" -v n="$RUNS" 'BEGIN { printf "%.1f", (e - s) / n / 1e6 }'
    fi
}

plan_ms="$(mean_ms "$BIN" plan --host-root "$TREE")"
json_ms="$(mean_ms "$BIN" plan --json --host-root "$TREE")"
detect_ms="$(mean_ms "$BIN" detect --json --host-root "$TREE")"
netplan_ms="n/a"
if command -v netplan >/dev/null 2>&1; then
    # Give netplan the bridge config the plan would write (apply under the host root).
    "$BIN" apply --yes --skip-nvidia --skip-kvm --skip-iommu --skip-vmctl --host-root "$TREE" >/dev/null 2>&1
    netplan_ms="$(mean_ms netplan generate --root-dir "$TREE")"
fi

printf '%-48s %10s %10s\n' "benchmark (host $HOST, $RUNS runs)" "measured" "target"
printf '%-48s %7s ms %7s ms\n' "gpu-vm-bootstrap plan (mean)" "$plan_ms" "< $TARGET_MS"
printf '%-48s %7s ms %7s ms\n' "gpu-vm-bootstrap plan --json (mean)" "$json_ms" "< $TARGET_MS"
printf '%-48s %7s ms %10s\n' "reference: gpu-vm-bootstrap detect --json" "$detect_ms" "-"
printf '%-48s %7s ms %10s\n' "reference: netplan generate --root-dir" "$netplan_ms" "-"

fail=0
for m in "$plan_ms" "$json_ms"; do
    awk -v m="$m" -v t="$TARGET_MS" 'BEGIN { exit !(m < t) }' || { echo "FAIL: plan mean $m ms >= $TARGET_MS ms"; fail=1; }
done
exit "$fail"
