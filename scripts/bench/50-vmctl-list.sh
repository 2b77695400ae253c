#!/usr/bin/env bash
# `vmctl list --json` vs `virsh list --all` with 200 defined domains, on a libvirt test-driver
# node file (test:///PATH/node.xml: in-process, no daemon, same parse cost for both).
# vmctl also reads every domain's XML (GPUs, IPs, metadata); target: <= 1.5 x virsh.
# Env: VMCTL_BIN, RUNS (default 20), DOMAINS (default 200).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z ${VMCTL_BIN:-} ]]; then
    cargo build --release -q -p vmctl-cli --manifest-path "$repo/Cargo.toml"
    VMCTL_BIN=${CARGO_TARGET_DIR:-$repo/target}/release/vmctl
fi
runs=${RUNS:-20}
n=${DOMAINS:-200}
work=$(mktemp -d /tmp/vmctl-bench-list.XXXXXX)
trap 'rm -rf "$work"' EXIT
{
    echo "<node>"
    for ((i = 0; i < n; i++)); do
        printf "<domain type='test'><name>bench%03d</name><memory>1048576</memory><vcpu>2</vcpu>" "$i"
        printf "<os><type arch='x86_64'>hvm</type></os><devices>"
        printf "<disk type='file' device='disk'><source file='/var/lib/vmctl/vms/bench%03d/disk.qcow2'/><target dev='vda' bus='virtio'/></disk>" "$i"
        printf "<interface type='bridge'><mac address='52:54:00:00:%02x:%02x'/><source bridge='br0'/></interface>" $((i / 256)) $((i % 256))
        printf "</devices></domain>\n"
    done
    echo "</node>"
} >"$work/node.xml"
uri="test://$work/node.xml"
got=$("$VMCTL_BIN" --connect "$uri" list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["vms"]))')
[[ $got == "$n" ]] || { echo "FAIL: vmctl listed $got of $n domains" >&2; exit 1; }

# total_ms CMD...: wall time of $runs runs, in milliseconds per run.
per_run_ms() {
    local i t0 t1
    t0=$(date +%s%N)
    for ((i = 0; i < runs; i++)); do "$@" >/dev/null; done
    t1=$(date +%s%N)
    awk -v n=$((t1 - t0)) -v r="$runs" 'BEGIN { printf "%.1f", n / r / 1e6 }'
}
t_virsh=$(per_run_ms virsh -c "$uri" list --all)
t_vmctl=$(per_run_ms "$VMCTL_BIN" --connect "$uri" list --json)
ratio=$(awk -v a="$t_virsh" -v b="$t_vmctl" 'BEGIN { printf "%.2f", b / a }')
printf '%-36s %10s\n' "list $n domains (mean of $runs)" "ms/run"
printf '%-36s %10s\n' "virsh list --all" "$t_virsh"
printf '%-36s %10s\n' "vmctl list --json" "$t_vmctl"
printf 'vmctl / virsh: %s (target <= 1.5)\n' "$ratio"
awk -v r="$ratio" 'BEGIN { exit !(r <= 1.5) }' || { echo "FAIL: ratio $ratio > 1.5" >&2; exit 1; }
