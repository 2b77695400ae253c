#!/usr/bin/env bash
# Prove the lab without vmctl: boot the lab image from hand-written domain XML with a NoCloud seed,
# static IP and a test SSH key, then `ssh … uname -a` from inside the lab namespace.
# Measures define→start, start→SSH, and cleans up everything it made (also on failure).
#
# Env (besides lib.sh's): GVB_LAB_SMOKE_IP (default 198.18.0.50), GVB_LAB_SMOKE_CPU_MODE (maximum |
# host-model | none, default maximum), GVB_LAB_SMOKE_TIMEOUT (seconds to SSH, default 180),
# GVB_LAB_SMOKE_BOOT (direct: base.qcow2 + direct kernel boot, BIOS, the default | disk: bootable.qcow2
# under UEFI without Secure Boot),
# GVB_LAB_KEEP=1 keeps the domain and files for inspection.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lab/lib.sh
. "$here/lib.sh"

lab_require_root
ip_addr=${GVB_LAB_SMOKE_IP:-198.18.0.50}
cpu_mode=${GVB_LAB_SMOKE_CPU_MODE:-maximum}
timeout=${GVB_LAB_SMOKE_TIMEOUT:-180}
boot=${GVB_LAB_SMOKE_BOOT:-direct}
name=gvb-smoke-$$
user=smoke
# A locally administered MAC in qemu's 52:54:00 range, unique per run (stale guests with the same MAC/IP
# answer first otherwise).
mac=$(printf '52:54:00:%02x:%02x:%02x' $((RANDOM % 256)) $((RANDOM % 256)) $((RANDOM % 256)))

t_start=$(lab_now)
"$here/up.sh"
image=$("$here/build-image.sh" | tail -n1)
[[ -f $image/base.qcow2 ]] || lab_die "no image in $image" "run tests/lab/build-image.sh"

mkdir -p /var/lib/gvb-lab
chmod 0755 /var/lib/gvb-lab
work=$(mktemp -d /var/lib/gvb-lab/smoke.XXXXXX)
chmod 0755 "$work" # qemu runs as libvirt-qemu and must reach the overlay, seed and log

cleanup() {
    local rc=$?
    if ((rc != 0)); then
        lab_log "FAILED (exit $rc); serial log tail:"
        tail -n 40 "$work/serial.log" 2>/dev/null >&2 || true
    fi
    if [[ ${GVB_LAB_KEEP:-0} == 1 ]]; then
        lab_log "GVB_LAB_KEEP=1: kept domain $name and $work"
        return
    fi
    lab_virsh destroy "$name" >/dev/null 2>&1 || true
    lab_virsh undefine "$name" --nvram >/dev/null 2>&1 || lab_virsh undefine "$name" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# --- seed -------------------------------------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C "gvb-lab-smoke" -f "$work/id_ed25519"
mkdir "$work/seed"
cat >"$work/seed/meta-data" <<EOF
instance-id: $name
local-hostname: $name
EOF
cat >"$work/seed/user-data" <<EOF
#cloud-config
users:
  - name: $user
    shell: /bin/bash
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    lock_passwd: true
    ssh_authorized_keys:
      - $(cat "$work/id_ed25519.pub")
ssh_pwauth: false
# Host-key generation under TCG costs ~15 s per key type.
ssh_genkeytypes: [ed25519]
manage_etc_hosts: localhost
EOF
cat >"$work/seed/network-config" <<EOF
version: 2
ethernets:
  eth0:
    match:
      macaddress: "$mac"
    set-name: eth0
    addresses: [$ip_addr/24]
    gateway4: 198.18.0.1
    nameservers:
      addresses: [198.18.0.1]
EOF
cloud-init schema --config-file "$work/seed/user-data" >/dev/null ||
    lab_die "cloud-init schema rejected the smoke user-data"
genisoimage -quiet -output "$work/seed.iso" -volid cidata -joliet -rock \
    "$work/seed/user-data" "$work/seed/meta-data" "$work/seed/network-config"

# --- disk + domain ----------------------------------------------------------------------------------
case $boot in
    direct)
        base=$image/base.qcow2
        os_xml="<os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>$image/vmlinuz</kernel>
    <initrd>$image/initrd.img</initrd>
    <cmdline>root=/dev/vda rw console=ttyS0 net.ifnames=0</cmdline>
  </os>"
        ;;
    disk)
        base=$image/bootable.qcow2
        # Plain UEFI: without the secure-boot feature off, libvirt autoselects the Secure Boot OVMF
        # build, which refuses the unsigned GRUB.
        os_xml="<os firmware='efi'>
    <type arch='x86_64' machine='q35'>hvm</type>
    <firmware><feature enabled='no' name='secure-boot'/></firmware>
    <boot dev='hd'/>
  </os>"
        ;;
    *) lab_die "GVB_LAB_SMOKE_BOOT must be direct or disk, not '$boot'" ;;
esac
qemu-img create -q -f qcow2 -F qcow2 -b "$base" "$work/disk.qcow2" 4G

case $cpu_mode in
    none) cpu_xml="" ;;
    *) cpu_xml="<cpu mode='$cpu_mode'/>" ;;
esac
cat >"$work/domain.xml" <<EOF
<domain type='qemu'>
  <name>$name</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>2</vcpu>
  $os_xml
  <features><acpi/><apic/></features>
  $cpu_xml
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$work/disk.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$work/seed.iso'/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>
    <interface type='bridge'>
      <mac address='$mac'/>
      <source bridge='$GVB_LAB_BRIDGE'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='$work/serial.log'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='$work/serial.log'/>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
  </devices>
</domain>
EOF
virt-xml-validate "$work/domain.xml" domain >/dev/null 2>&1 || lab_die "virt-xml-validate rejected $work/domain.xml"

t_define=$(lab_now)
lab_virsh define "$work/domain.xml" >/dev/null
lab_virsh start "$name" >/dev/null
t_started=$(lab_now)
lab_log "started $name ($boot boot, mac $mac, ip $ip_addr, cpu mode $cpu_mode) in $(lab_elapsed "$t_define" "$t_started") s"

ssh_opts=(-i "$work/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    -o ConnectTimeout=3 -o LogLevel=ERROR)
lab_wait_for "$timeout" "SSH on $ip_addr" lab_in_ns ssh "${ssh_opts[@]}" "$user@$ip_addr" true ||
    lab_die "no SSH to $ip_addr within $timeout s" "GVB_LAB_KEEP=1 $0, then look at the serial log"
t_ssh=$(lab_now)
lab_in_ns ssh "${ssh_opts[@]}" "$user@$ip_addr" 'uname -a; [ -d /sys/firmware/efi ] && echo "booted by UEFI"; df -h / | tail -n1'
lab_log "start -> SSH: $(lab_elapsed "$t_started" "$t_ssh") s"

# Extra facts for later users of the lab: cloud-init's verdict and the guest agent's view of the NIC.
ci=$(lab_in_ns ssh "${ssh_opts[@]}" "$user@$ip_addr" 'cloud-init status --wait >/dev/null 2>&1; cloud-init status --long' 2>&1 || true)
t_ci=$(lab_now)
lab_log "cloud-init finished $(lab_elapsed "$t_started" "$t_ci") s after start: $(grep -E '^status' <<<"$ci" || echo "$ci")"
if lab_wait_for 60 "guest agent" lab_virsh domifaddr "$name" --source agent; then
    lab_log "guest agent: $(lab_virsh domifaddr "$name" --source agent | grep -F "$ip_addr" | tr -s ' ')"
else
    lab_log "guest agent did not answer within 60 s"
fi

t_stop0=$(lab_now)
lab_virsh shutdown "$name" >/dev/null
if lab_wait_for 60 "ACPI shutdown" bash -c "[[ \$(virsh -c '$GVB_LAB_URI' domstate '$name') == 'shut off' ]]"; then
    lab_log "ACPI shutdown took $(lab_elapsed "$t_stop0" "$(lab_now)") s"
else
    lab_log "ACPI shutdown did not finish within 60 s (destroyed instead)"
fi
lab_log "smoke OK: total $(lab_elapsed "$t_start" "$(lab_now)") s"
