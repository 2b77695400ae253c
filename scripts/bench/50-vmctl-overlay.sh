#!/usr/bin/env bash
# vmctl create: time with a 2 GiB vs a 20 GiB (sparse) base image. The per-VM disk is a qcow2
# overlay, so the base's size must not matter: target ratio <= 1.2.
# Runs `vmctl create ubuntu --no-start` against libvirt's in-process test driver with a fixture
# host root (bridge br0), so it needs no daemon and no root. Env: VMCTL_BIN, RUNS (default 11).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z ${VMCTL_BIN:-} ]]; then
    cargo build --release -q -p vmctl-cli --manifest-path "$repo/Cargo.toml"
    VMCTL_BIN=${CARGO_TARGET_DIR:-$repo/target}/release/vmctl
fi
runs=${RUNS:-11}
work=$(mktemp -d /tmp/vmctl-bench-overlay.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/sys/class/net/br0/bridge"
ssh-keygen -q -t ed25519 -N '' -f "$work/id"
truncate -s 2G "$work/base-2g.raw"
truncate -s 20G "$work/base-20g.raw"

# create_us BASE RUN: wall time of one create, in microseconds.
create_us() {
    local base=$1 i=$2 t0 t1
    # storage_dir and image_cache are host paths: under --host-root they land in $work/root.
    local storage="/vms-$i-$(basename "$base")"
    t0=$(date +%s%N)
    VMCTL_STORAGE_DIR="$storage" VMCTL_IMAGE_CACHE=/cache \
        "$VMCTL_BIN" --host-root "$work/root" --connect test:///default \
        create ubuntu bench --image "$base" --bridge br0 --dhcp --ssh-key "$work/id.pub" \
        --domain-type qemu --disk 40G --no-start >/dev/null 2>"$work/err" ||
        { cat "$work/err" >&2; echo "FAIL: vmctl create failed" >&2; return 1; }
    t1=$(date +%s%N)
    [[ -f $work/root$storage/bench/disk.qcow2 && -f $work/root$storage/bench/seed.iso ]] ||
        { echo "FAIL: no overlay/seed in $work/root$storage" >&2; return 1; }
    echo $(((t1 - t0) / 1000))
}

# Interleave the two sizes so that load from other processes hits both alike; take medians.
small_us=() large_us=()
for ((i = 0; i < runs; i++)); do
    small_us+=("$(create_us "$work/base-2g.raw" "$i")") || exit 1
    large_us+=("$(create_us "$work/base-20g.raw" "$i")") || exit 1
done
median_ms() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'; }
small=$(median_ms "${small_us[@]}")
large=$(median_ms "${large_us[@]}")
ratio=$(awk -v a="$small" -v b="$large" 'BEGIN { printf "%.2f", b / a }')
printf '%-44s %10s %10s %8s %8s\n' "benchmark" "2 GiB" "20 GiB" "ratio" "target"
printf '%-44s %8s ms %7s ms %8s %8s\n' "vmctl create (overlay+seed+define), median" "$small" "$large" "$ratio" "<= 1.2"
awk -v r="$ratio" 'BEGIN { exit !(r <= 1.2) }' || { echo "FAIL: ratio $ratio > 1.2" >&2; exit 1; }
