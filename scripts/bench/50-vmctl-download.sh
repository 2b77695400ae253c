#!/usr/bin/env bash
# Download+verify throughput of `vmctl image fetch --sha256` (streams through SHA-256 in one
# pass on a second thread, fsyncs before moving into the cache) vs curl, from a local HTTP server
# (python3 -m http.server on 127.0.0.1). Target: vmctl >= 0.9 x curl; the gate compares with
# `curl && sync FILE` so both make the file durable (plain curl is printed too).
# Env: VMCTL_BIN, SIZE_MIB (default 1024), RUNS (default 5).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z ${VMCTL_BIN:-} ]]; then
    cargo build --release -q -p vmctl-cli --manifest-path "$repo/Cargo.toml"
    VMCTL_BIN=${CARGO_TARGET_DIR:-$repo/target}/release/vmctl
fi
size_mib=${SIZE_MIB:-1024}
runs=${RUNS:-5}
work=$(mktemp -d /tmp/vmctl-bench-dl.XXXXXX)
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
for _ in $(seq 50); do curl -fsI "$url" >/dev/null 2>&1 && break; sleep 0.1; done

# once_ns CMD...: wall time of one run, in nanoseconds (output dirs emptied first).
once_ns() {
    local t0 t1
    rm -rf "$work/out" "$work/cache"
    mkdir -p "$work/out"
    t0=$(date +%s%N)
    "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; echo "FAIL: $*" >&2; return 1; }
    t1=$(date +%s%N)
    echo $((t1 - t0))
}
min() { printf '%s\n' "$@" | sort -n | head -n1; }
secs() { awk -v n="$1" 'BEGIN { printf "%.3f", n / 1e9 }'; }

# Interleaved, best of $runs each: load from other processes hits all three alike, and the
# fastest run is the least disturbed one.
c=() cf=() cs=() v=()
for ((i = 0; i < runs; i++)); do
    c+=("$(once_ns curl -fsS -o "$work/out/blob.img" "$url")") || exit 1
    cf+=("$(once_ns sh -c "curl -fsS -o '$work/out/blob.img' '$url' && sync '$work/out/blob.img'")") || exit 1
    cs+=("$(once_ns sh -c "curl -fsS -o '$work/out/blob.img' '$url' && sha256sum '$work/out/blob.img'")") || exit 1
    v+=("$(once_ns env VMCTL_IMAGE_CACHE="$work/cache" "$VMCTL_BIN" image fetch "$url" --sha256 "$sha")") || exit 1
done
t_curl=$(secs "$(min "${c[@]}")")
t_curl_sync=$(secs "$(min "${cf[@]}")")
t_curl_sha=$(secs "$(min "${cs[@]}")")
t_vmctl=$(secs "$(min "${v[@]}")")
# Prove vmctl really verified and cached the file.
VMCTL_IMAGE_CACHE="$work/cache" "$VMCTL_BIN" image fetch "$url" --sha256 "$sha" >/dev/null 2>&1
[[ -f $work/cache/sha256/$sha ]] || { echo "FAIL: vmctl did not cache the blob" >&2; exit 1; }

mbps() { awk -v s="$size_mib" -v t="$1" 'BEGIN { printf "%.0f", s / t }'; }
ratio=$(awk -v a="$t_curl_sync" -v b="$t_vmctl" 'BEGIN { printf "%.2f", a / b }')
ratio_plain=$(awk -v a="$t_curl" -v b="$t_vmctl" 'BEGIN { printf "%.2f", a / b }')
printf '%-40s %10s %12s\n' "download of $size_mib MiB from 127.0.0.1" "seconds" "MiB/s"
printf '%-40s %10s %12s\n' "curl -o FILE" "$t_curl" "$(mbps "$t_curl")"
printf '%-40s %10s %12s\n' "curl -o FILE && sync FILE (durable)" "$t_curl_sync" "$(mbps "$t_curl_sync")"
printf '%-40s %10s %12s\n' "curl -o FILE && sha256sum FILE" "$t_curl_sha" "$(mbps "$t_curl_sha")"
printf '%-40s %10s %12s\n' "vmctl image fetch --sha256 (verified)" "$t_vmctl" "$(mbps "$t_vmctl")"
ratio_sha=$(awk -v a="$t_curl_sha" -v b="$t_vmctl" 'BEGIN { printf "%.2f", a / b }')
printf 'vmctl / (curl + sha256sum) throughput: %s\n' "$ratio_sha"
printf 'vmctl / curl throughput: %s (curl leaves the file in the page cache; vmctl fsyncs)\n' "$ratio_plain"
printf 'vmctl / (curl + sync) throughput: %s (target >= 0.9, same durability)\n' "$ratio"
awk -v r="$ratio" 'BEGIN { exit !(r >= 0.9) }' || { echo "FAIL: ratio $ratio < 0.9" >&2; exit 1; }
