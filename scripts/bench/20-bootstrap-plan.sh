#!/usr/bin/env bash
# Benchmark: `gpu-vm-bootstrap plan` on every fixture host the fixture-tree example knows (real
# listings and synthetic edge cases), whole CLI (process start, detection, reading /etc, planning,
# diff rendering), median of RUNS with hyperfine. Target: < 50 ms on each. For reference: `detect
# --json` (the facts part) on the first host, and `netplan generate --root-dir` on its planned bridge
# (the tool the plan's bridge step feeds).
# Env: RUNS (default 30), HOSTS (space-separated subset), CARGO_TARGET_DIR (default target/).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh

RUNS="${RUNS:-30}"
TARGET_MS=50
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

cargo build --quiet --release -p gpu-vm-bootstrap --bin gpu-vm-bootstrap --example fixture-tree
BIN="$TARGET_DIR/release/gpu-vm-bootstrap"
TREE_TOOL="$TARGET_DIR/release/examples/fixture-tree"
if [[ -z ${HOSTS:-} ]]; then
    HOSTS=$({ "$TREE_TOOL" 2>&1 || true; } | sed -n 's/^hosts: //p' | tr -d ',')
fi
work="$(mktemp -d -t gvb-bench-plan-XXXXXX)"
trap 'rm -rf "$work"' EXIT

# median_ms CMD...: median wall time of CMD over $RUNS runs, in ms (a failing plan is timed too:
# a refusal is a plan's answer).
median_ms() {
    hyperfine -N -i --runs "$RUNS" --warmup 3 --style none --export-json "$work/h.json" \
        "$(printf '%q ' "$@")" >/dev/null 2>&1
    python3 -c 'import json, sys; print("%.1f" % (json.load(open(sys.argv[1]))["results"][0]["median"] * 1000))' "$work/h.json"
}

printf '%-40s %10s %10s %8s\n' "gpu-vm-bootstrap plan, median of $RUNS" "measured" "target" "exit"
fail=0 worst=0 worst_host= n=0
for host in $HOSTS; do
    tree="$work/$host"
    "$TREE_TOOL" "$host" "$tree" dhcp
    rc=0
    "$BIN" plan --host-root "$tree" >/dev/null 2>&1 || rc=$?
    ms=$(median_ms "$BIN" plan --host-root "$tree")
    n=$((n + 1))
    printf '%-40s %7s ms %7s ms %8s\n' "$host" "$ms" "< $TARGET_MS" "$rc"
    if [[ $(bench_check "$ms >= $worst") == pass ]]; then worst=$ms worst_host=$host; fi
    [[ $(bench_check "$ms < $TARGET_MS") == pass ]] || { echo "FAIL: plan on $host: $ms ms >= $TARGET_MS ms"; fail=1; }
done
first=${HOSTS%% *}
detect_ms="$(median_ms "$BIN" detect --json --host-root "$work/$first")"
netplan_ms="n/a"
if command -v netplan >/dev/null 2>&1; then
    "$BIN" apply --yes --skip-nvidia --skip-kvm --skip-iommu --skip-vmctl --host-root "$work/$first" >/dev/null 2>&1 || true
    netplan_ms="$(median_ms netplan generate --root-dir "$work/$first")"
fi
printf '%-40s %7s ms\n' "reference: detect --json ($first)" "$detect_ms"
printf '%-40s %7s ms\n' "reference: netplan generate --root-dir" "$netplan_ms"
bench_result "gpu-vm-bootstrap plan, each of $n fixture hosts (slowest: $worst_host)" "$worst ms" \
    "detect --json: $detect_ms ms; netplan generate: $netplan_ms ms" "< $TARGET_MS ms" "$( ((fail)) && echo FAIL || echo pass)"
exit "$fail"
