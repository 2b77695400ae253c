#!/usr/bin/env bash
# Bring the lab up (idempotent): network namespace $GVB_LAB_NETNS with loopback and bridge
# $GVB_LAB_BRIDGE ($GVB_LAB_BRIDGE_CIDR), and virtlogd + libvirtd running INSIDE that namespace, so every
# guest tap lands on the isolated bridge. No NAT, no route out: guests reach only 198.18.0.0/24.
# qemu:///system still works from the root namespace because the libvirt socket is a file.
#
# This machine has no systemd as PID 1, so the daemons are started by hand. On a systemd host, stop the
# system libvirtd first (`systemctl stop libvirtd virtqemud '*.socket'`) or give the unit a drop-in with
# `NetworkNamespacePath=/run/netns/vmlab` (see tests/lab/README.md).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lab/lib.sh
. "$here/lib.sh"

lab_require_root
for tool in ip libvirtd virtlogd virsh flock; do
    command -v "$tool" >/dev/null || lab_die "$tool not found" "apt-get install iproute2 libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils"
done

mkdir -p "$GVB_LAB_RUN"
exec 9>"$GVB_LAB_RUN/.updown.lock"
flock 9
t0=$(lab_now)

# A daemon from a pid file, if that process is alive.
pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
# The netns a pid lives in, as named by `ip netns identify` (empty for the root namespace).
pid_netns() { ip netns identify "$1" 2>/dev/null || true; }

# 1. Namespace, loopback, bridge.
if ! grep -qx "$GVB_LAB_NETNS" <<<"$(ip netns list | cut -d' ' -f1)"; then
    ip netns add "$GVB_LAB_NETNS"
    lab_log "created netns $GVB_LAB_NETNS"
fi
ip -n "$GVB_LAB_NETNS" link set lo up
if ! ip -n "$GVB_LAB_NETNS" link show "$GVB_LAB_BRIDGE" >/dev/null 2>&1; then
    ip -n "$GVB_LAB_NETNS" link add "$GVB_LAB_BRIDGE" type bridge stp_state 0 forward_delay 0
    lab_log "created bridge $GVB_LAB_BRIDGE"
fi
# (Capture first: `ip … | grep -q` under pipefail fails when grep exits early and ip gets SIGPIPE.)
addrs=$(ip -n "$GVB_LAB_NETNS" -o addr show dev "$GVB_LAB_BRIDGE")
if ! grep -qw "$GVB_LAB_BRIDGE_CIDR" <<<"$addrs"; then
    ip -n "$GVB_LAB_NETNS" addr add "$GVB_LAB_BRIDGE_CIDR" dev "$GVB_LAB_BRIDGE"
fi
ip -n "$GVB_LAB_NETNS" link set "$GVB_LAB_BRIDGE" up

# 2. Daemons. Refuse a libvirtd that runs elsewhere: its guests would not see our bridge.
if pid_alive /run/libvirtd.pid; then
    ns=$(pid_netns "$(cat /run/libvirtd.pid)")
    [[ $ns == "$GVB_LAB_NETNS" ]] || lab_die \
        "libvirtd (pid $(cat /run/libvirtd.pid)) already runs outside netns $GVB_LAB_NETNS (in '${ns:-root}')" \
        "stop it (tests/lab/down.sh, or systemctl stop libvirtd) and run tests/lab/up.sh again"
    lab_log "libvirtd already running in $GVB_LAB_NETNS (pid $(cat /run/libvirtd.pid))"
else
    stray=$( { pgrep -x libvirtd; pgrep -x virtqemud; } | tr '\n' ' ' || true)
    if [[ -n ${stray// /} ]]; then
        lab_die "a libvirt daemon runs without /run/libvirtd.pid (pids: $stray)" \
            "stop it (systemctl stop libvirtd virtqemud) before bringing the lab up"
    fi
    if ! pid_alive /run/virtlogd.pid; then
        lab_in_ns virtlogd -d 9>&-
    fi
    # libvirt's `default` NAT network must never run in the lab. Its autostart link is what
    # `virsh net-autostart --disable default` removes; removing it before the daemon starts keeps the
    # daemon from ever bringing the network up.
    if [[ -L /etc/libvirt/qemu/networks/autostart/default.xml ]]; then
        rm -f /etc/libvirt/qemu/networks/autostart/default.xml
        lab_log "disabled autostart of libvirt's 'default' network (the lab never uses it)"
    fi
    lab_in_ns libvirtd -d 9>&-  # 9>&-: the daemon must not inherit our lock
    lab_log "started libvirtd in netns $GVB_LAB_NETNS"
fi
lab_wait_for 30 "libvirtd socket" virsh -c "$GVB_LAB_URI" version ||
    lab_die "libvirtd did not answer on $GVB_LAB_URI within 30 s" "look at /var/log/libvirt/libvirtd.log, or run: ip netns exec $GVB_LAB_NETNS libvirtd -v"

# Belt and braces: if something started `default` anyway, stop it (only inside our namespaced daemon).
if grep -qx default <<<"$(lab_virsh net-list --name 2>/dev/null)"; then
    lab_virsh net-destroy default >/dev/null
    lab_log "destroyed libvirt's 'default' network in the lab daemon"
fi

lab_log "lab up in $(lab_elapsed "$t0" "$(lab_now)") s: netns $GVB_LAB_NETNS, bridge $GVB_LAB_BRIDGE $GVB_LAB_BRIDGE_CIDR, $GVB_LAB_URI"
