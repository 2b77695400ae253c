#!/usr/bin/env bash
# `vmctl ip list --json` with 50 and with 200 running VMs on a libvirt test-driver node file
# (in-process, no daemon). libvirt is asked in bulk: one listing per state filter and for
# persistence, then the XML per VM (libvirt has no bulk call for it), and the guest agent only
# for a running VM whose address is still unknown. Target: cost grows no worse than linearly
# (200 VMs <= 4x 50 VMs, + 20 % for timer noise), next to `virsh list --all` for scale.
# Run in a new network namespace with no interfaces (unshare -n) when root, so an ARP scan
# could never leave the machine. Env: VMCTL_BIN, RUNS (default 11).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/bench/lib.sh
. "$repo/scripts/bench/lib.sh"
bench_vmctl
runs=${RUNS:-11}
work=$(mktemp -d /tmp/vmctl-bench-iplist.XXXXXX)
trap 'rm -rf "$work"' EXIT
isolate=()
[[ $(id -u) -eq 0 ]] && isolate=(unshare -n)

declare -A ip_ms virsh_ms
for n in 50 200; do
    bench_node_file "$work/node-$n.xml" "$n" ip 01 gvbbench0
    uri="test://$work/node-$n.xml"
    "${isolate[@]}" "$VMCTL_BIN" --connect "$uri" ip list --bridge gvbbench0 --json >"$work/out.json" 2>/dev/null
    python3 - "$work/out.json" "$n" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
vms = {a["vm"] for a in d["addresses"]}
assert len(vms) == int(sys.argv[2]), f"{len(vms)} VMs listed"
assert not d["scanned"], "an ARP scan ran"
PY
    a=() b=()
    for ((i = 0; i < runs; i++)); do
        a+=("$(bench_once_ms "${isolate[@]}" "$VMCTL_BIN" --connect "$uri" ip list --bridge gvbbench0 --json)")
        b+=("$(bench_once_ms virsh -c "$uri" list --all)")
    done
    ip_ms[$n]=$(printf '%s\n' "${a[@]}" | bench_median)
    virsh_ms[$n]=$(printf '%s\n' "${b[@]}" | bench_median)
done
growth=$(awk -v a="${ip_ms[50]}" -v b="${ip_ms[200]}" 'BEGIN { printf "%.2f", b / a }')
printf '%-30s %10s %10s\n' "median of $runs, ms" "50 VMs" "200 VMs"
printf '%-30s %10s %10s\n' "vmctl ip list --json" "${ip_ms[50]}" "${ip_ms[200]}"
printf '%-30s %10s %10s\n' "virsh list --all" "${virsh_ms[50]}" "${virsh_ms[200]}"
echo "vmctl ip list, 200 / 50 VMs: ${growth}x (target <= 4.8x: linear or better)"
bench_result "vmctl ip list --json, 200 running VMs" "${ip_ms[200]} ms" "50 VMs: ${ip_ms[50]} ms; virsh list --all: ${virsh_ms[200]} ms" \
    "<= 4x the 50-VM time (+20 %)" "$(bench_check "$growth <= 4.8")" "${growth}x"
[[ $(bench_check "$growth <= 4.8") == pass ]]
