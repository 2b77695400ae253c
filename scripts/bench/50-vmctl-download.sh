#!/usr/bin/env bash
# Download + verify throughput: `vmctl image fetch --sha256` (streams to disk, hashes the bytes
# read back on a second thread, fsyncs before the blob enters the cache) against
# `curl -o FILE && sync FILE` (the same durability, no verification), from a local HTTP server
# (python3 -m http.server on 127.0.0.1). Target: vmctl's throughput >= 0.9 x curl's.
#
# Fair by construction: before every run the previous output is deleted and the whole system is
# synced (no dirty pages left to write back during the next contender's run), and the source file
# is read once so it is in the page cache for everyone. The two contenders alternate, RUNS times
# with curl first and RUNS times with vmctl first, and each order reports its median and spread.
# The gate uses the median over all runs. `curl -o FILE` alone and `curl && sha256sum` are printed
# for reference (not gated).
# Env: VMCTL_BIN, SIZE_MIB (default 1024), RUNS (per order, default 5).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/bench/lib.sh
. "$repo/scripts/bench/lib.sh"
bench_vmctl
size_mib=${SIZE_MIB:-1024}
runs=${RUNS:-5}
work=$(mktemp -d /var/tmp/vmctl-bench-dl.XXXXXX)
server=
cleanup() { [[ -n $server ]] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/srv"
head -c $((size_mib << 20)) /dev/urandom >"$work/srv/blob.img"
sha=$(sha256sum "$work/srv/blob.img" | cut -d' ' -f1)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/srv" "$port" >/dev/null 2>&1 &
server=$!
url="http://127.0.0.1:$port/blob.img"
for _ in $(seq 100); do curl -fsI "$url" >/dev/null 2>&1 && break; sleep 0.1; done

out=$work/out/blob.img
contender() {
    case $1 in
    curl) curl -fsS -o "$out" "$url" ;;
    curl-sync) curl -fsS -o "$out" "$url" && sync "$out" ;;
    curl-sha) curl -fsS -o "$out" "$url" && sha256sum "$out" ;;
    vmctl) VMCTL_IMAGE_CACHE="$work/cache" "$VMCTL_BIN" image fetch "$url" --sha256 "$sha" ;;
    esac
}
# once_ms NAME: one run from the common start state, wall time in ms.
once_ms() {
    rm -rf "$work/out" "$work/cache"
    mkdir -p "$work/out"
    sync
    cat "$work/srv/blob.img" >/dev/null
    local t0 t1
    t0=$(date +%s%N)
    contender "$1" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; echo "FAIL: $1" >&2; return 1; }
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}

declare -A times
for order in "curl-sync vmctl" "vmctl curl-sync"; do
    for ((i = 0; i < runs; i++)); do
        for c in $order; do
            t=$(once_ms "$c") || exit 1
            times["$order/$c"]+="$t "
            times["all/$c"]+="$t "
        done
    done
done
for c in curl curl-sha; do
    for ((i = 0; i < 3; i++)); do
        t=$(once_ms "$c") || exit 1
        times["all/$c"]+="$t "
    done
done
# The cache really holds the verified blob.
contender vmctl >/dev/null 2>&1
[[ -f $work/cache/sha256/$sha ]] || { echo "FAIL: vmctl did not cache the blob" >&2; exit 1; }

med() { tr ' ' '\n' <<<"$1" | grep . | bench_median; }
spr() { tr ' ' '\n' <<<"$1" | grep . | bench_spread; }
mbps() { awk -v s="$size_mib" -v t="$1" 'BEGIN { printf "%.0f", s / (t / 1000) }'; }
printf 'download of %s MiB from 127.0.0.1, wall ms: median (spread) of %s runs per order\n' "$size_mib" "$runs"
printf '  %-34s %22s %22s\n' contender "curl-sync first" "vmctl first"
for c in curl-sync vmctl; do
    a="${times["curl-sync vmctl/$c"]}" b="${times["vmctl curl-sync/$c"]}"
    printf '  %-34s %14s ms (%4s) %14s ms (%4s)\n' "$c" "$(med "$a")" "$(spr "$a")" "$(med "$b")" "$(spr "$b")"
done
t_sync=$(med "${times[all/curl-sync]}")
t_vmctl=$(med "${times[all/vmctl]}")
printf '  %-34s %10s ms  %6s MiB/s\n' "curl -o F && sync F (all runs)" "$t_sync" "$(mbps "$t_sync")"
printf '  %-34s %10s ms  %6s MiB/s\n' "vmctl image fetch --sha256 (all)" "$t_vmctl" "$(mbps "$t_vmctl")"
for c in curl curl-sha; do
    t=$(med "${times[all/$c]}")
    printf '  %-34s %10s ms  %6s MiB/s  (reference, median of 3)\n' "$c" "$t" "$(mbps "$t")"
done
ratio=$(awk -v a="$t_sync" -v b="$t_vmctl" 'BEGIN { printf "%.2f", a / b }')
echo "  vmctl throughput / (curl && sync): $ratio (target >= 0.9)"
bench_result "download+verify ${size_mib} MiB, vmctl image fetch --sha256" "$(mbps "$t_vmctl") MiB/s" \
    "curl && sync: $(mbps "$t_sync") MiB/s" ">= 0.9x" "$(bench_check "$ratio >= 0.9")" "${ratio}x"
[[ $(bench_check "$ratio >= 0.9") == pass ]]
