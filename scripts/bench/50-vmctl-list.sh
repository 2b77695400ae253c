#!/usr/bin/env bash
# `vmctl list --json` vs `virsh list --all` with 200 and with 1,000 defined domains, on a libvirt
# test-driver node file (test:///PATH/node.xml: in-process, no daemon, the same parse cost for
# both). vmctl also reads every domain's XML (GPUs, IPs, metadata). Target: <= 1.5 x virsh at
# 1,000 domains, and no worse than linear growth (vmctl's 1,000 / 200 ratio <= virsh's + 20 %).
# The two alternate, RUNS times each; medians.
# Env: VMCTL_BIN, RUNS (default 11).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/bench/lib.sh
. "$repo/scripts/bench/lib.sh"
bench_vmctl
runs=${RUNS:-11}
work=$(mktemp -d /tmp/vmctl-bench-list.XXXXXX)
trap 'rm -rf "$work"' EXIT

med() { printf '%s\n' "$@" | bench_median; }

declare -A virsh_ms vmctl_ms
for n in 200 1000; do
    bench_node_file "$work/node-$n.xml" "$n" bench 00 br0
    uri="test://$work/node-$n.xml"
    got=$("$VMCTL_BIN" --connect "$uri" list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["vms"]))')
    [[ $got == "$n" ]] || { echo "FAIL: vmctl listed $got of $n domains" >&2; exit 1; }
    a=() b=()
    for ((i = 0; i < runs; i++)); do
        a+=("$(bench_once_ms virsh -c "$uri" list --all)")
        b+=("$(bench_once_ms "$VMCTL_BIN" --connect "$uri" list --json)")
    done
    virsh_ms[$n]=$(med "${a[@]}")
    vmctl_ms[$n]=$(med "${b[@]}")
done
printf '%-30s %12s %12s\n' "list, median of $runs, ms" "200 domains" "1000 domains"
printf '%-30s %12s %12s\n' "virsh list --all" "${virsh_ms[200]}" "${virsh_ms[1000]}"
printf '%-30s %12s %12s\n' "vmctl list --json" "${vmctl_ms[200]}" "${vmctl_ms[1000]}"
ratio=$(awk -v a="${virsh_ms[1000]}" -v b="${vmctl_ms[1000]}" 'BEGIN { printf "%.2f", b / a }')
growth_v=$(awk -v a="${vmctl_ms[200]}" -v b="${vmctl_ms[1000]}" 'BEGIN { printf "%.2f", b / a }')
growth_s=$(awk -v a="${virsh_ms[200]}" -v b="${virsh_ms[1000]}" 'BEGIN { printf "%.2f", b / a }')
echo "vmctl / virsh at 1000: $ratio (target <= 1.5); 1000 / 200 domains: vmctl ${growth_v}x, virsh ${growth_s}x"
bench_result "vmctl list --json, 1000 domains" "${vmctl_ms[1000]} ms" "virsh list --all: ${virsh_ms[1000]} ms" \
    "<= 1.5x" "$(bench_check "$ratio <= 1.5")" "${ratio}x"
bench_result "vmctl list --json, growth 200 -> 1000 domains" "${growth_v}x" "virsh: ${growth_s}x" \
    "<= virsh's + 20 %" "$(bench_check "$growth_v <= $growth_s * 1.2")"
[[ $(bench_check "$ratio <= 1.5 && $growth_v <= $growth_s * 1.2") == pass ]]
