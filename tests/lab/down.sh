#!/usr/bin/env bash
# Tear the lab down: destroy running guests of the lab daemon, stop libvirtd and virtlogd (only the ones
# running in the lab namespace), delete the bridge and the namespace. Safe to run twice.
# Defined-but-stopped domains stay defined (their owners' tests clean them up); they are listed.
# Mirrors left running by http-mirror.sh (a test killed before its trap ran) are stopped too.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lab/lib.sh
. "$here/lib.sh"

lab_require_root
mkdir -p "$GVB_LAB_RUN"
exec 9>"$GVB_LAB_RUN/.updown.lock"
flock 9

in_lab_ns() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null && [[ $(ip netns identify "$(cat "$1")" 2>/dev/null) == "$GVB_LAB_NETNS" ]]; }

# stop_daemon PIDFILE NAME: SIGTERM, wait up to 10 s, then SIGKILL.
stop_daemon() {
    local pidfile=$1 name=$2 pid
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || return 0
    if lab_wait_for 10 "$name (pid $pid) to exit" lab_gone "$pid"; then
        lab_log "stopped $name (pid $pid)"
        return 0
    fi
    kill -9 "$pid" 2>/dev/null || true
    lab_log "killed $name (pid $pid) after 10 s"
}

shopt -s nullglob
for pidfile in "$GVB_LAB_RUN"/http-mirror-*.pid; do
    pid=$(cat "$pidfile")
    if grep -q 'http_mirror.py' "/proc/$pid/cmdline" 2>/dev/null; then
        kill "$pid" && lab_log "stopped leftover mirror (pid $pid, $(basename "$pidfile" .pid))"
    fi
    rm -f "$pidfile"
done

if in_lab_ns /run/libvirtd.pid; then
    for dom in $(lab_virsh list --name 2>/dev/null); do
        lab_virsh destroy "$dom" >/dev/null && lab_log "destroyed running domain $dom"
    done
    left=$(lab_virsh list --all --name 2>/dev/null | tr '\n' ' ')
    [[ -z ${left// /} ]] || lab_log "still defined (not removed): $left"
    stop_daemon /run/libvirtd.pid libvirtd
elif [[ -s /run/libvirtd.pid ]] && kill -0 "$(cat /run/libvirtd.pid)" 2>/dev/null; then
    lab_log "libvirtd (pid $(cat /run/libvirtd.pid)) is not the lab's (not in netns $GVB_LAB_NETNS): left alone"
fi
if in_lab_ns /run/virtlogd.pid; then
    stop_daemon /run/virtlogd.pid virtlogd
fi

if grep -qx "$GVB_LAB_NETNS" <<<"$(ip netns list | cut -d' ' -f1)"; then
    ip -n "$GVB_LAB_NETNS" link del "$GVB_LAB_BRIDGE" 2>/dev/null || true
    ip netns del "$GVB_LAB_NETNS"
    lab_log "deleted netns $GVB_LAB_NETNS"
fi
lab_log "lab down"
