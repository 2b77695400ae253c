#!/usr/bin/env bash
# Peak RSS of `vmctl image fetch` while downloading a 4 GiB (sparse) file from a local HTTP
# server: the download streams, so memory must stay <= 64 MiB. Measured with /usr/bin/time -v
# (Debian package `time`). Env: VMCTL_BIN, SIZE_GIB (default 4).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/bench/lib.sh
. "$repo/scripts/bench/lib.sh"
bench_vmctl
[[ -x /usr/bin/time ]] || { echo "error: /usr/bin/time not found" >&2; echo "help: apt-get install time" >&2; exit 1; }
size_gib=${SIZE_GIB:-4}
work=$(mktemp -d /tmp/vmctl-bench-rss.XXXXXX)
server=
cleanup() { [[ -n $server ]] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/srv"
truncate -s "${size_gib}G" "$work/srv/big.img"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/srv" "$port" >/dev/null 2>&1 &
server=$!
url="http://127.0.0.1:$port/big.img"
for _ in $(seq 50); do curl -fsI "$url" >/dev/null 2>&1 && break; sleep 0.1; done

rss_kib() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }'; }
vm=$(rss_kib env VMCTL_IMAGE_CACHE="$work/cache" "$VMCTL_BIN" image fetch "$url")
[[ $(stat -c %s "$work/cache/sha256/"* 2>/dev/null) == $((size_gib << 30)) ]] || { echo "FAIL: vmctl did not fetch the whole file" >&2; exit 1; }
rm -rf "$work/cache"
cu=$(rss_kib curl -fsS -o "$work/curl.img" "$url")
rm -f "$work/curl.img"
printf '%-44s %12s\n' "peak RSS fetching ${size_gib} GiB" "MiB"
printf '%-44s %12s\n' "curl -o FILE (reference)" "$(awk -v k="$cu" 'BEGIN { printf "%.1f", k / 1024 }')"
printf '%-44s %12s\n' "vmctl image fetch" "$(awk -v k="$vm" 'BEGIN { printf "%.1f", k / 1024 }')"
printf 'target: vmctl <= 64 MiB\n'
bench_result "peak RSS, image fetch of ${size_gib} GiB" "$(awk -v k="$vm" 'BEGIN { printf "%.1f", k / 1024 }') MiB" \
    "curl: $(awk -v k="$cu" 'BEGIN { printf "%.1f", k / 1024 }') MiB" "<= 64 MiB" "$(bench_check "$vm <= 65536")"
((vm <= 65536)) || { echo "FAIL: peak RSS ${vm} KiB > 64 MiB" >&2; exit 1; }
