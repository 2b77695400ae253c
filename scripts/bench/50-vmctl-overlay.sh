#!/usr/bin/env bash
# `vmctl create ubuntu` from a cached 2 GiB and a cached 20 GiB base image: the per-VM disk is a
# qcow2 overlay and a cached blob is checked through its seal (stat identity), not re-hashed, so
# the base's size must not matter: target ratio (20 GiB / 2 GiB) <= 1.2.
# Both bases are served by a local HTTP server and fetched into the cache first (sparse files of
# zeros: the download keeps zero runs as holes, so the 20 GiB costs no disk). Then the creates
# alternate, each `--image URL` resolved through the cache. Last, the 20 GiB blob's mtime is
# changed: its seal no longer matches, and the next create re-hashes it once (timed, reported).
# Runs against libvirt's test driver with a fixture host root (bridge br0): no daemon, no root.
# Env: VMCTL_BIN, RUNS (default 11).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/bench/lib.sh
. "$repo/scripts/bench/lib.sh"
bench_vmctl
runs=${RUNS:-11}
work=$(mktemp -d /var/tmp/vmctl-bench-overlay.XXXXXX)
server=
cleanup() { [[ -n $server ]] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/root/sys/class/net/br0/bridge" "$work/srv"
ssh-keygen -q -t ed25519 -N '' -f "$work/id"
truncate -s 2G "$work/srv/base-2g.raw"
truncate -s 20G "$work/srv/base-20g.raw"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/srv" "$port" >/dev/null 2>&1 &
server=$!
base_url="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -fsI "$base_url/base-2g.raw" >/dev/null 2>&1 && break; sleep 0.1; done

# The image cache is a host path: under --host-root it lands in $work/root/cache.
export VMCTL_IMAGE_CACHE=/cache
vmctl() { "$VMCTL_BIN" --host-root "$work/root" --connect test:///default "$@"; }
for size in 2g 20g; do
    t0=$(date +%s%N)
    vmctl image fetch "$base_url/base-$size.raw" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    t1=$(date +%s%N)
    printf 'first fetch of the %s base (download + hash): %d ms\n' "$size" $(((t1 - t0) / 1000000))
done
echo "cache on disk: $(du -sh "$work/root/cache" | cut -f1) for 22 GiB of images"

# create_us SIZE RUN: wall time of one create, in microseconds; what it printed (the base's
# verification among it) goes to $work/said.
create_us() {
    local size=$1 i=$2 t0 t1
    local storage="/vms-$i-$size"
    t0=$(date +%s%N)
    VMCTL_STORAGE_DIR="$storage" vmctl create ubuntu bench --image "$base_url/base-$size.raw" \
        --bridge br0 --dhcp --ssh-key "$work/id.pub" --domain-type qemu --disk 40G --no-start \
        >"$work/said" 2>&1 || { cat "$work/said" >&2; echo "FAIL: vmctl create failed" >&2; return 1; }
    t1=$(date +%s%N)
    [[ -f $work/root$storage/bench/disk.qcow2 && -f $work/root$storage/bench/seed.iso ]] ||
        { echo "FAIL: no overlay/seed in $work/root$storage" >&2; return 1; }
    echo $(((t1 - t0) / 1000))
}

small_us=() large_us=()
for ((i = 0; i < runs; i++)); do
    small_us+=("$(create_us 2g "$i")") || exit 1
    large_us+=("$(create_us 20g "$i")") || exit 1
done
grep -q "seal intact" "$work/said" || { echo "FAIL: the create did not use the seal:" >&2; cat "$work/said" >&2; exit 1; }
median_ms() { printf '%s\n' "$@" | bench_median | awk '{ printf "%.1f", $1 / 1000 }'; }
small=$(median_ms "${small_us[@]}")
large=$(median_ms "${large_us[@]}")
ratio=$(awk -v a="$small" -v b="$large" 'BEGIN { printf "%.2f", b / a }')

# A broken seal: the next use re-hashes the 20 GiB once.
blob20=$(find "$work/root/cache/sha256" -size +10G)
touch -d '2001-01-01' "$blob20"
rehash_us=$(create_us 20g rehash) || exit 1
after_us=$(create_us 20g after) || exit 1

printf '%-52s %10s %10s %8s %8s\n' "vmctl create from the cache, median of $runs" "2 GiB" "20 GiB" "ratio" "target"
printf '%-52s %7s ms %7s ms %8s %8s\n' "seal intact (overlay + seed + define)" "$small" "$large" "$ratio" "<= 1.2"
printf '%-52s %21s ms\n' "20 GiB, seal broken (mtime changed): re-hashed once" "$(median_ms "$rehash_us")"
printf '%-52s %21s ms\n' "20 GiB, the next create (sealed again)" "$(median_ms "$after_us")"
sed -n 's/^/  create said: /p' "$work/said" | grep -i "seal\|hash" || true
bench_result "create ubuntu from cache, 20 GiB vs 2 GiB base" "${large} ms" "2 GiB: ${small} ms" "<= 1.2x" \
    "$(bench_check "$ratio <= 1.2")" "${ratio}x"
[[ $(bench_check "$ratio <= 1.2") == pass ]]
