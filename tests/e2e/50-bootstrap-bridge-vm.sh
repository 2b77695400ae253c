#!/usr/bin/env bash
# Issue 3's riskiest step on a real network stack: gpu-vm-bootstrap's bridge phase moves the NIC of a
# netplan + systemd-networkd host onto br0, keeping its IP, under a watchdog that restores the old
# config when the bridge check fails. The host is a lab guest (Debian, TCG) converted from ifupdown to
# netplan + networkd the way an Ubuntu cloud host is set up (50-cloud-init.yaml, mode 0600, match by
# MAC + set-name, static address, default route, nameserver). Then, reached over new SSH connections
# each time (the network moves under them, so every change runs detached inside the guest):
#   1. apply (bridge phase only) exits 0; br0 holds the IP with the NIC enslaved; the gateway answers;
#      SSH still works at the same address; `verify` is happy with the bridge; a second plan has no
#      bridge action;
#   2. rollback puts the IP back on the NIC;
#   3. with the guest's ICMP echo requests to the gateway dropped in netns vmlab (SSH still works),
#      apply fails its bridge check, restores the old files, applies them again and exits non-zero;
#      the NIC holds the IP again and SSH still works.
# The VM (e2e-bridge, 198.18.0.110) and the firewall table are removed whatever happens.
# Env: VMCTL, GVB_BOOTSTRAP (binaries; default: cargo build), GVB_E2E_WAIT_TIMEOUT (default 600 s),
# GVB_LAB_KEEP=1 (keep the VM and scratch dir).
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_gate

vm=e2e-bridge
vm_ip=198.18.0.110
gw=198.18.0.1
wait_timeout=${GVB_E2E_WAIT_TIMEOUT:-600}
nft_table=gvb_e2e_bridge
bin=/usr/local/bin/gpu-vm-bootstrap
# Only the bridge phase; --force because the guest is Debian, not Ubuntu 24.04.
phase_args=(--gpu-mode none --skip-nvidia --skip-kvm --skip-iommu --skip-vmctl --force)

"$REPO/tests/lab/up.sh"
image=$("$REPO/tests/lab/build-image.sh" | tail -n1)
vmctl_bin=$(e2e_find_vmctl)
if [[ -n ${GVB_BOOTSTRAP:-} ]]; then
    boot_bin=$GVB_BOOTSTRAP
else
    (cd "$REPO" && cargo build -q -p gpu-vm-bootstrap --bin gpu-vm-bootstrap) >&2 ||
        lab_die "cargo build -p gpu-vm-bootstrap failed" "fix the build, or point GVB_BOOTSTRAP at a binary"
    boot_bin=${CARGO_TARGET_DIR:-$REPO/target}/debug/gpu-vm-bootstrap
fi
[[ -x $boot_bin ]] || lab_die "$boot_bin is not an executable"

mkdir -p /var/lib/gvb-lab
chmod 0755 /var/lib/gvb-lab
work=$(mktemp -d /var/lib/gvb-lab/e2e-bridge.XXXXXX)
chmod 0755 "$work"
mkdir -p "$work/vms" "$work/images" "$work/state"
: >"$work/config.toml"
export VMCTL_CONNECT=$GVB_LAB_URI
export VMCTL_STORAGE_DIR=$work/vms
export VMCTL_IMAGE_CACHE=$work/images
export VMCTL_STATE_DIR=$work/state
ssh-keygen -q -t ed25519 -N '' -C gvb-e2e -f "$work/id_ed25519"

vmctl() { lab_in_ns "$vmctl_bin" --config "$work/config.toml" "$@"; }
# A script (stdin) run as root in the guest over a NEW SSH connection: the network moves under us.
guest_ns() { lab_in_ns timeout 60 "$vmctl_bin" --config "$work/config.toml" ssh "$vm" -- sudo bash -s; }
domain_exists() { lab_virsh dominfo "$vm" >/dev/null 2>&1; }
remove_domain() {
    lab_virsh destroy "$vm" >/dev/null 2>&1 || true
    lab_virsh undefine "$vm" --nvram >/dev/null 2>&1 || lab_virsh undefine "$vm" >/dev/null 2>&1 || true
}
drop_icmp_off() { lab_in_ns nft delete table inet "$nft_table" >/dev/null 2>&1 || true; }

if domain_exists; then
    lab_log "removing leftover domain $vm from an earlier run"
    remove_domain
fi
drop_icmp_off

on_exit() {
    local rc=$?
    drop_icmp_off
    if ((rc != 0)); then
        echo "---- FAILED (exit $rc): diagnostics for $vm ----" >&2
        if domain_exists; then
            guest_ns <<'EOF' >&2 2>&1 || echo "(no SSH to $vm)" >&2
for f in /root/e2e-*.log; do [ -f "$f" ] && { echo "---- $f"; tail -n 40 "$f"; }; done
echo "---- ip -br addr / route"; ip -br addr; ip route
echo "---- networkctl"; networkctl --no-pager list
echo "---- /etc/netplan"; head -n 40 /etc/netplan/*.yaml
EOF
        fi
        [[ -f $VMCTL_STORAGE_DIR/$vm/console.log ]] && {
            echo "---- serial log (last 40 lines) ----" >&2
            tail -n 40 "$VMCTL_STORAGE_DIR/$vm/console.log" >&2
        }
    fi
    if [[ ${GVB_LAB_KEEP:-0} == 1 ]]; then
        lab_log "GVB_LAB_KEEP=1: kept $vm and $work"
    else
        domain_exists && remove_domain
        rm -rf "$work"
    fi
    lab_log "$(basename "$0"): $( ((rc == 0)) && echo PASSED || echo FAILED) in $(lab_elapsed "$E2E_T0" "$(lab_now)") s"
}
trap on_exit EXIT

create() {
    vmctl create ubuntu "$vm" --image "$image/base.qcow2" --kernel "$image/vmlinuz" --initrd "$image/initrd.img" \
        --kernel-args 'root=/dev/vda rw console=ttyS0 net.ifnames=0' --firmware bios \
        --bridge "$GVB_LAB_BRIDGE" --ip "$vm_ip/24" --gateway "$gw" --dns "$gw" \
        --domain-type qemu --cpu-mode host-model --cpus 2 --memory 1024 \
        --ssh-key "$work/id_ed25519.pub" --user e2e --wait --wait-timeout "$wait_timeout" >/dev/null
}
e2e_step "vmctl create ubuntu $vm --ip $vm_ip --wait" create

# The NIC that holds the address, and its MAC (vmctl's network-config may rename eth0).
nic_facts() {
    read -r nic mac < <(guest_ns <<EOF
dev=\$(ip -o -4 addr show | awk '\$4 == "$vm_ip/24" { print \$2; exit }')
echo "\$dev \$(cat /sys/class/net/\$dev/address)"
EOF
    )
    [[ -n $nic && -n $mac ]] || { echo "no NIC holds $vm_ip in the guest" >&2; return 1; }
    lab_log "guest NIC: $nic ($mac)"
}
e2e_step "find the guest's NIC" nic_facts

# The binary links only libc/libgcc; strip a copy (debug builds are large, the copy goes over TCG SSH).
copy_binary() {
    strip -o "$work/gpu-vm-bootstrap" "$boot_bin"
    gzip -1 -c "$work/gpu-vm-bootstrap" >"$work/gpu-vm-bootstrap.gz"
    lab_in_ns timeout 120 "$vmctl_bin" --config "$work/config.toml" ssh "$vm" -- \
        "sudo sh -c 'gunzip -c > $bin && chmod 0755 $bin'" <"$work/gpu-vm-bootstrap.gz"
    guest_ns <<<"$bin --version"
}
e2e_step "copy gpu-vm-bootstrap into the guest" copy_binary

# Wait until a new SSH connection runs `true` again (the guest's network was just reconfigured).
guest_true() { guest_ns <<<true; }
ssh_back() { lab_wait_for "${1:-90}" "SSH to $vm" guest_true; }
# Run SCRIPT (stdin) detached in the guest (setsid + nohup: the SSH session may die under it), its
# output in /root/e2e-NAME.log and its exit code in /root/e2e-NAME.rc; poll (over new SSH connections)
# until the rc file has the exit code, and print it.
guest_rc() { rc=$(guest_ns <<<"cat /root/e2e-$1.rc 2>/dev/null") && [[ -n $rc ]]; }
detached() {
    local name=$1 timeout=${2:-120} script rc=
    script=$(cat)
    guest_ns <<EOF
rm -f /root/e2e-$name.rc /root/e2e-$name.log
cat > /root/e2e-$name.sh <<'INNER'
$script
INNER
setsid nohup bash -c 'bash /root/e2e-$name.sh > /root/e2e-$name.log 2>&1; echo \$? > /root/e2e-$name.rc' </dev/null >/dev/null 2>&1 &
EOF
    # lab_wait_for calls guest_rc in this shell: it sets our local rc.
    lab_wait_for "$timeout" "$name to finish in $vm" guest_rc "$name" ||
        { echo "$name did not finish within $timeout s" >&2; return 1; }
    echo "$rc"
}
# The NIC or bridge that holds the guest's address right now.
holder() {
    guest_ns <<EOF
ip -o -4 addr show | awk '\$4 == "$vm_ip/24" { print \$2 }' | tr '\n' ' '
EOF
}
# The NIC is free again and the bridge is gone (`netplan apply` alone leaves it behind).
no_bridge_left() {
    guest_ns <<EOF
[ ! -e /sys/class/net/$nic/master ] || { echo "$nic is still enslaved" >&2; exit 1; }
[ ! -e /sys/class/net/br0 ] || { echo "br0 is left over: \$(ip -br link show dev br0)" >&2; exit 1; }
[ ! -e /etc/netplan/60-gpu-vm-bootstrap-bridge.yaml ] || { echo "the bridge file is still there" >&2; exit 1; }
EOF
}
# assert_holder DEV: DEV holds the address and nothing else does; SSH works (we just used it).
assert_holder() {
    local h
    h=$(holder)
    [[ $h == "$1 " ]] || { echo "expected $vm_ip on $1 only, found it on: '${h:-nothing}'" >&2; return 1; }
    lab_log "$vm_ip is on $1"
}

# Like an Ubuntu cloud host: cloud-init's netplan file, networkd renders it; ifupdown lets go.
to_netplan() {
    local rc
    rc=$(detached convert 120 <<EOF
set -x
umask 077
cat > /etc/netplan/50-cloud-init.yaml <<'YAML'
network:
  version: 2
  ethernets:
    $nic:
      match:
        macaddress: "$mac"
      set-name: $nic
      addresses: [$vm_ip/24]
      routes:
        - to: default
          via: $gw
      nameservers:
        addresses: [$gw]
YAML
chmod 0600 /etc/netplan/50-cloud-init.yaml
ifdown --force $nic || true
ip addr flush dev $nic
mv /etc/network/interfaces.d/50-cloud-init /root/50-cloud-init.ifupdown 2>/dev/null || true
netplan apply
EOF
    ) || return 1
    [[ $rc == 0 ]] || { echo "netplan conversion exited $rc" >&2; return 1; }
    ssh_back 60
    assert_holder "$nic"
    guest_ns <<EOF
networkctl --no-pager list
# "configuring" for a few seconds (IPv6 link-local, RA) before "configured": wait for that state
# (systemd-networkd-wait-online(8), IFACE:MIN_OPERSTATE).
/lib/systemd/systemd-networkd-wait-online --interface=$nic:routable --timeout=60 && exit 0
networkctl --no-pager status $nic
echo "$nic not configured by networkd within 60 s" >&2
exit 1
EOF
}
e2e_step "convert the guest to netplan + networkd ($nic)" to_netplan

apply_ok() {
    local rc
    rc=$(detached apply1 180 <<<"$bin apply ${phase_args[*]} --yes") || return 1
    guest_ns <<<"cat /root/e2e-apply1.log" >&2
    [[ $rc == 0 ]] || { echo "apply exited $rc" >&2; return 1; }
}
e2e_step "apply (bridge phase), detached" apply_ok

bridged() {
    assert_holder br0
    guest_ns <<EOF
set -e
master=\$(basename "\$(readlink /sys/class/net/$nic/master)")
[ "\$master" = br0 ] || { echo "$nic is not enslaved to br0 (master: \$master)" >&2; exit 1; }
ip route show default | grep -q "via $gw dev br0" || { echo "default route not via br0: \$(ip route show default)" >&2; exit 1; }
ping -c1 -W2 $gw >/dev/null || { echo "gateway $gw does not answer from the guest" >&2; exit 1; }
networkctl --no-pager list
EOF
}
e2e_step "br0 holds $vm_ip, $nic enslaved, gateway answers, SSH works" bridged

verify_bridge() {
    local json
    json=$(guest_ns <<<"$bin verify ${phase_args[*]} --json || true")
    python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
br = [c for c in r["checks"] if c["phase"] == "bridge"]
for c in br: print("  %-4s %s" % (c["status"], c["detail"]))
if not br or any(c["status"] != "ok" for c in br): sys.exit("verify: bridge checks not all ok")
' <<<"$json"
}
e2e_step "verify: bridge checks pass" verify_bridge

idempotent() {
    local json
    json=$(guest_ns <<<"$bin plan ${phase_args[*]} --json")
    python3 -c '
import json, sys
acts = [a for a in json.loads(sys.stdin.read())["actions"] if a["phase"] == "bridge"]
if acts: sys.exit(f"second plan still has bridge actions: {acts}")
' <<<"$json"
}
e2e_step "a second plan has no bridge action" idempotent

rollback() {
    local rc
    rc=$(detached rollback 120 <<<"$bin rollback --yes") || return 1
    guest_ns <<<"cat /root/e2e-rollback.log" >&2
    [[ $rc == 0 ]] || { echo "rollback exited $rc" >&2; return 1; }
    ssh_back 60
    assert_holder "$nic"
    no_bridge_left
}
e2e_step "rollback: $vm_ip back on $nic, br0 gone" rollback

# The watchdog for real: the gateway stops answering the guest's pings (only ICMP echo requests from
# the guest are dropped, so SSH keeps working), the bridge check fails, the old config comes back.
drop_icmp_on() {
    lab_in_ns nft -f - <<EOF
table inet $nft_table {
    chain input {
        type filter hook input priority 0; policy accept;
        ip saddr $vm_ip icmp type echo-request drop
    }
}
EOF
    ! guest_ns <<<"ping -c1 -W2 $gw" >/dev/null || { echo "the gateway still answers pings" >&2; return 1; }
}
e2e_step "drop the guest's pings to $gw (nft in netns $GVB_LAB_NETNS)" drop_icmp_on

watchdog_reverts() {
    local rc log
    rc=$(detached apply2 180 <<<"$bin apply ${phase_args[*]} --yes --watchdog-tries 3 --watchdog-interval 1") || return 1
    log=$(guest_ns <<<"cat /root/e2e-apply2.log")
    echo "$log" >&2
    [[ $rc != 0 ]] || { echo "apply succeeded although the gateway does not answer" >&2; return 1; }
    grep -q 'br0 check failed' <<<"$log" || { echo "log does not say the bridge check failed" >&2; return 1; }
    grep -q 'old network config restored and applied again' <<<"$log" ||
        { echo "log does not say the old config was restored and applied" >&2; return 1; }
    ssh_back 60
    assert_holder "$nic"
    no_bridge_left
}
e2e_step "apply with a silent gateway: watchdog restores $nic, br0 gone (exit != 0)" watchdog_reverts
