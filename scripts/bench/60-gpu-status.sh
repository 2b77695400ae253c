#!/usr/bin/env bash
# `vmctl gpu status` on the 8-GPU HGX H200 fixture host (a tree built from a real listing by the
# fixture-tree example), whole process, against libvirt's test driver (no daemon). Target: < 20 ms.
# For reference, side by side: the process start alone (`vmctl --version`: vmctl links libvirt, which
# loads 56 shared libraries), `virsh --version` (the same libraries), and the 2-GPU B550 fixture (a
# full listing: more PCI devices than the truncated HGX one, so it costs more despite fewer GPUs).
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

# hyperfine (no shell, fork and exec included, as for any CLI) runs the five commands in blocks of
# RUNS/5 runs each, five blocks in a row, so drift in the machine's speed hits all alike; each
# figure is the median of its five block medians.
cmds=(
    "$VMCTL --version"
    "virsh --version"
    "$VMCTL --host-root $work/hgx --connect test:///default gpu status"
    "$VMCTL --host-root $work/hgx --connect test:///default gpu status --json"
    "$VMCTL --host-root $work/b550 --connect test:///default gpu status"
)
declare -a times
for ((blk = 0; blk < 5; blk++)); do
    hyperfine -N --runs $((RUNS / 5)) --warmup 3 --style none --export-json "$work/h.json" "${cmds[@]}" >/dev/null 2>&1
    i=0
    while read -r m; do
        times[i]+="$m "
        i=$((i + 1))
    done < <(python3 -c 'import json, sys; [print("%.3f" % (r["median"] * 1000)) for r in json.load(open(sys.argv[1]))["results"]]' "$work/h.json")
done
med() { tr ' ' '\n' <<<"${times[$1]}" | grep . | bench_median | awk '{ printf "%.1f", $1 }'; }
start=$(med 0) virsh_start=$(med 1) hgx=$(med 2) hgx_json=$(med 3) b550=$(med 4)
printf '%-48s %10s\n' "median of 5 blocks of $((RUNS / 5)) runs" "ms"
printf '%-48s %10s\n' "vmctl --version (process start, libvirt loaded)" "$start"
printf '%-48s %10s\n' "virsh --version (the same libraries)" "$virsh_start"
printf '%-48s %10s\n' "vmctl gpu status, HGX fixture ($gpus GPUs)" "$hgx"
printf '%-48s %10s\n' "vmctl gpu status --json, HGX fixture" "$hgx_json"
printf '%-48s %10s\n' "vmctl gpu status, B550 fixture (2 GPUs)" "$b550"
bench_result "vmctl gpu status, 8-GPU HGX fixture" "$hgx ms" "process start: $start ms; virsh --version: $virsh_start ms; B550: $b550 ms" \
    "< 20 ms" "$(bench_check "$hgx < 20")"
[[ $(bench_check "$hgx < 20") == pass ]]
