# shellcheck shell=bash
# Shared settings and helpers for the lab scripts. Source it; don't run it.
# Every setting is an env var with a default, documented in tests/lab/README.md.

: "${GVB_LAB_CACHE:=/var/cache/gvb-lab}"
: "${GVB_LAB_NETNS:=vmlab}"
: "${GVB_LAB_BRIDGE:=labbr0}"
: "${GVB_LAB_BRIDGE_CIDR:=198.18.0.1/24}"
: "${GVB_LAB_RUN:=/run/gvb-lab}"
: "${GVB_LAB_URI:=qemu:///system}"
export GVB_LAB_CACHE GVB_LAB_NETNS GVB_LAB_BRIDGE GVB_LAB_BRIDGE_CIDR GVB_LAB_RUN GVB_LAB_URI

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

lab_log() { printf '[lab %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# lab_die MESSAGE [HELP]
lab_die() {
    printf 'error: %s\n' "$1" >&2
    [[ -n ${2:-} ]] && printf 'help: %s\n' "$2" >&2
    exit 1
}

lab_require_root() {
    [[ $(id -u) -eq 0 ]] || lab_die "the lab needs root (network namespaces, libvirtd)" "run with sudo"
}

# Seconds since the epoch with millisecond precision, and the difference of two such stamps.
lab_now() { date +%s.%3N; }
lab_elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# The image cache entry for the current recipe: a hash of build-image.sh (without comment-only and blank
# lines, so editing a comment doesn't cost a rebuild) and the suite.
lab_image_dir() {
    local key
    key=$( { grep -vE '^[[:space:]]*(#|$)' "$LAB_DIR/build-image.sh"; echo "${GVB_LAB_SUITE:-bookworm}"; } |
        sha256sum | cut -c1-16)
    echo "$GVB_LAB_CACHE/images/$key"
}

lab_virsh() { virsh -q -c "$GVB_LAB_URI" "$@"; }
lab_in_ns() { ip netns exec "$GVB_LAB_NETNS" "$@"; }

# lab_wait_for SECONDS DESCRIPTION COMMAND...: wait for a state: retry COMMAND (a check, run in this
# shell, output discarded) every 0.5 s until it succeeds; fail after SECONDS. The only way the lab
# scripts wait: never a bare `sleep N` to let something happen.
lab_wait_for() {
    local timeout=$1 what=$2 deadline
    shift 2
    deadline=$(($(date +%s) + timeout))
    until "$@" >/dev/null 2>&1; do
        (($(date +%s) < deadline)) || { lab_log "timed out after ${timeout}s waiting for $what"; return 1; }
        sleep 0.5
    done
}

# lab_gone PID: the process has exited (a state for lab_wait_for).
lab_gone() { ! kill -0 "$1" 2>/dev/null; }
