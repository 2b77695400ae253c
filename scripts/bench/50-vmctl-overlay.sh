#!/usr/bin/env bash
# vmctl create: time with a 2 GiB vs a 20 GiB (sparse) base image. The per-VM disk is a qcow2
# overlay, so the base's size must not matter: target ratio <= 1.2.
# Runs `vmctl create ubuntu --no-start` against libvirt's in-process test driver with a fixture
# host root (bridge br0), so it needs no daemon and no root. Env: VMCTL_BIN, RUNS (default 7).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z ${VMCTL_BIN:-} ]]; then
    cargo build --release -q -p vmctl --manifest-path "$repo/Cargo.toml"
    VMCTL_BIN=${CARGO_TARGET_DIR:-$repo/target}/release/vmctl
fi
runs=${RUNS:-7}
work=$(mktemp -d /tmp/vmctl-bench-overlay.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/sys/class/net/br0/bridge"
ssh-keygen -q -t ed25519 -N '' -f "$work/id"
truncate -s 2G "$work/base-2g.raw"
truncate -s 20G "$work/base-20g.raw"

# median_ms BASE: median wall time of $runs creates, in milliseconds.
median_ms() {
    local base=$1 i t0 t1 times=()
    for ((i = 0; i < runs; i++)); do
        t0=$(date +%s%N)
        VMCTL_STORAGE_DIR="$work/vms-$i-$(basename "$base")" VMCTL_IMAGE_CACHE="$work/cache" \
            "$VMCTL_BIN" --host-root "$work/root" --connect test:///default \
            create ubuntu bench --image "$base" --bridge br0 --dhcp --ssh-key "$work/id.pub" \
            --domain-type qemu --disk 40G --no-start >/dev/null 2>&1
        t1=$(date +%s%N)
        times+=($(((t1 - t0) / 1000)))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}

small=$(median_ms "$work/base-2g.raw")
large=$(median_ms "$work/base-20g.raw")
ratio=$(awk -v a="$small" -v b="$large" 'BEGIN { printf "%.2f", b / a }')
printf '%-44s %10s %10s %8s %8s\n' "benchmark" "2 GiB" "20 GiB" "ratio" "target"
printf '%-44s %8s ms %7s ms %8s %8s\n' "vmctl create (overlay+seed+define), median" "$small" "$large" "$ratio" "<= 1.2"
awk -v r="$ratio" 'BEGIN { exit !(r <= 1.2) }' || { echo "FAIL: ratio $ratio > 1.2" >&2; exit 1; }
