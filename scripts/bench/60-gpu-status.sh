#!/usr/bin/env bash
# `vmctl gpu status` on the 8-GPU HGX H200 fixture host (a tree built from a real listing by the
# fixture-tree example), whole process, against libvirt's test driver (no daemon). Target: < 20 ms.
# For reference, side by side: the process start alone (`vmctl --version`: vmctl links libvirt, which
# loads 56 shared libraries), `virsh --version` (the same libraries), and the 2-GPU B550 fixture, so
# the per-GPU cost shows: it must grow no worse than linearly with the GPUs.
# Env: RUNS (default 100), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh
RUNS=${RUNS:-100}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --quiet --release -p vmctl-cli --bin vmctl -p gpu-vm-bootstrap --example fixture-tree
VMCTL=$TARGET_DIR/release/vmctl
work=$(mktemp -d /tmp/vmctl-bench-gpu.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$TARGET_DIR/release/examples/fixture-tree" hgx-h200x8-nvswitch-truncated "$work/hgx" none
"$TARGET_DIR/release/examples/fixture-tree" amd-b550m-gt710-rtx2070s "$work/b550" none
gpus=$("$VMCTL" --host-root "$work/hgx" --connect test:///default gpu status --json |
    python3 -c 'import json, sys; d = json.load(sys.stdin); print(len(d["gpus"] if isinstance(d, dict) else d))')

# median_ms CMD...: median wall time over $RUNS runs (hyperfine, no shell), in ms.
median_ms() {
    hyperfine -N --runs "$RUNS" --warmup 5 --style none --export-json "$work/h.json" "$(printf '%q ' "$@")" >/dev/null 2>&1
    python3 -c 'import json, sys; print("%.1f" % (json.load(open(sys.argv[1]))["results"][0]["median"] * 1000))' "$work/h.json"
}
start=$(median_ms "$VMCTL" --version)
virsh_start=$(median_ms virsh --version)
hgx=$(median_ms "$VMCTL" --host-root "$work/hgx" --connect test:///default gpu status)
hgx_json=$(median_ms "$VMCTL" --host-root "$work/hgx" --connect test:///default gpu status --json)
b550=$(median_ms "$VMCTL" --host-root "$work/b550" --connect test:///default gpu status)
work8=$(awk -v a="$hgx" -v s="$start" 'BEGIN { printf "%.1f", a - s }')
work2=$(awk -v a="$b550" -v s="$start" 'BEGIN { printf "%.1f", a - s }')
printf '%-48s %10s\n' "median of $RUNS runs" "ms"
printf '%-48s %10s\n' "vmctl --version (process start, libvirt loaded)" "$start"
printf '%-48s %10s\n' "virsh --version (the same libraries)" "$virsh_start"
printf '%-48s %10s   (%s ms after the process start)\n' "vmctl gpu status, HGX fixture ($gpus GPUs)" "$hgx" "$work8"
printf '%-48s %10s\n' "vmctl gpu status --json, HGX fixture" "$hgx_json"
printf '%-48s %10s   (%s ms after the process start)\n' "vmctl gpu status, B550 fixture (2 GPUs)" "$b550" "$work2"
bench_result "vmctl gpu status, 8-GPU HGX fixture" "$hgx ms" "process start: $start ms; virsh --version: $virsh_start ms" \
    "< 20 ms" "$(bench_check "$hgx < 20")"
# Linear or better: 4x the GPUs may cost at most 4x the work (+1 ms of timer noise).
bench_result "vmctl gpu status, work for 8 vs 2 GPUs" "$work8 ms" "2 GPUs: $work2 ms" "<= 4x + 1 ms" \
    "$(bench_check "$work8 <= 4 * $work2 + 1")"
[[ $(bench_check "$hgx < 20 && $work8 <= 4 * $work2 + 1") == pass ]]
