#!/usr/bin/env bash
# Issue 4 end to end: `vmctl create ubuntu` a real guest on the lab bridge (the lab's Debian cloud-init
# image stands in for the Ubuntu cloud image; direct kernel boot, TCG), reach it with `vmctl ssh`, see it
# in `vmctl list --json` with its IP, stop it, delete it, and check nothing is left: no domain, no overlay,
# no seed, base image untouched.
#
# vmctl runs under `ip netns exec vmlab` so that the bridge check, --wait and ssh see the lab network.
# Scratch settings (storage dir, image cache, state dir, empty config file) live in a temp dir under
# /var/lib/gvb-lab, so nothing touches /var/lib/vmctl or /etc/vmctl.
#
# Two boot modes (GVB_E2E_BOOT):
#   direct (default): base.qcow2 + --kernel/--initrd/--kernel-args, BIOS: what the brief for issue 4 asks;
#   disk:             bootable.qcow2 like a real cloud image: UEFI (vmctl's default firmware), GRUB on
#                     the disk, --disk 4G, and the guest must see EFI and a root fs grown past 3 GiB.
#                     90-ubuntu-vm-uefi.sh runs this mode.
# Env: VMCTL (binary), GVB_E2E_VM / GVB_E2E_IP (default e2e1 / 198.18.0.60), GVB_E2E_CPU_MODE (default
# host-model), GVB_E2E_WAIT_TIMEOUT (default 600 s), GVB_LAB_KEEP=1 (keep the VM and scratch dir).
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_gate

vm=${GVB_E2E_VM:-e2e1}
vm_ip=${GVB_E2E_IP:-198.18.0.60}
boot=${GVB_E2E_BOOT:-direct}
[[ $boot == direct || $boot == disk ]] || lab_die "GVB_E2E_BOOT must be direct or disk, not '$boot'"
cpu_mode=${GVB_E2E_CPU_MODE:-host-model}
wait_timeout=${GVB_E2E_WAIT_TIMEOUT:-600}

"$REPO/tests/lab/up.sh"
image=$("$REPO/tests/lab/build-image.sh" | tail -n1)
vmctl_bin=$(e2e_find_vmctl)
lab_log "vmctl: $vmctl_bin ($("$vmctl_bin" --version 2>/dev/null || echo 'version unknown'))"

mkdir -p /var/lib/gvb-lab
chmod 0755 /var/lib/gvb-lab
work=$(mktemp -d /var/lib/gvb-lab/e2e-ubuntu.XXXXXX)
chmod 0755 "$work" # qemu (libvirt-qemu) must reach the overlay, seed and console log
mkdir -p "$work/vms" "$work/images" "$work/state"
: >"$work/config.toml"
export VMCTL_CONNECT=$GVB_LAB_URI
export VMCTL_STORAGE_DIR=$work/vms
export VMCTL_IMAGE_CACHE=$work/images
export VMCTL_STATE_DIR=$work/state
ssh-keygen -q -t ed25519 -N '' -C gvb-e2e -f "$work/id_ed25519"

vmctl() { lab_in_ns "$vmctl_bin" --config "$work/config.toml" "$@"; }
domain_exists() { lab_virsh dominfo "$vm" >/dev/null 2>&1; }

# A domain left over from an earlier, killed run would make create refuse the name (and answer on the IP).
if domain_exists; then
    lab_log "removing leftover domain $vm from an earlier run"
    lab_virsh destroy "$vm" >/dev/null 2>&1 || true
    lab_virsh undefine "$vm" --nvram >/dev/null 2>&1 || lab_virsh undefine "$vm" >/dev/null 2>&1 || true
fi

on_exit() {
    local rc=$?
    if ((rc != 0)); then
        echo "---- FAILED (exit $rc): diagnostics for $vm ----" >&2
        local log
        for log in "$VMCTL_STORAGE_DIR/$vm/console.log" $(lab_virsh dumpxml "$vm" 2>/dev/null |
            sed -n "s/.*<source path='\([^']*\)'.*/\1/p"); do
            [[ -f $log ]] || continue
            echo "---- serial log $log (last 60 lines) ----" >&2
            tail -n 60 "$log" >&2
        done
        echo "---- virsh dumpxml $vm ----" >&2
        lab_virsh dumpxml "$vm" >&2 2>/dev/null || echo "(no domain $vm)" >&2
        echo "---- storage dir ----" >&2
        find "$work" -maxdepth 3 -ls >&2 || true
    fi
    if [[ ${GVB_LAB_KEEP:-0} == 1 ]]; then
        lab_log "GVB_LAB_KEEP=1: kept $vm and $work"
    else
        local d
        for d in "$vm" "$vm-sbcheck"; do
            lab_virsh dominfo "$d" >/dev/null 2>&1 || continue
            lab_virsh destroy "$d" >/dev/null 2>&1 || true
            lab_virsh undefine "$d" --nvram >/dev/null 2>&1 || lab_virsh undefine "$d" >/dev/null 2>&1 || true
        done
        rm -rf "$work"
    fi
    lab_log "$(basename "$0") ($vm, $boot boot): $( ((rc == 0)) && echo PASSED || echo FAILED) in $(lab_elapsed "$E2E_T0" "$(lab_now)") s"
}
trap on_exit EXIT

if [[ $boot == direct ]]; then
    base=$image/base.qcow2
    boot_args=(--image "$base" --kernel "$image/vmlinuz" --initrd "$image/initrd.img"
        --kernel-args 'root=/dev/vda rw console=ttyS0 net.ifnames=0' --firmware bios)
else
    base=$image/bootable.qcow2
    boot_args=(--image "$base" --firmware efi --disk 4G)
fi
base_stat_before=$(stat -c '%s %Y' "$base")

# The lab's GRUB is unsigned, like any self-built bootloader. libvirt's firmware autoselection for a bare
# <os firmware='efi'> picks the Secure Boot OVMF build on Debian/Ubuntu (OVMF_CODE_4M.ms.fd, keys
# enrolled), which refuses it ("Access Denied"). So vmctl's plain `efi` must ask for
# <firmware><feature enabled='no' name='secure-boot'/></firmware>. Check that on a --no-start twin
# first: seconds, instead of a --wait timeout.
secure_boot_off() {
    local twin=${vm}-sbcheck xml rc=0
    local twin_ip=${vm_ip%.*}.$((${vm_ip##*.} + 1)) # the next address; the twin never starts
    vmctl create ubuntu "$twin" "${boot_args[@]}" --bridge "$GVB_LAB_BRIDGE" --ip "$twin_ip/24" \
        --domain-type qemu --ssh-key "$work/id_ed25519.pub" --user e2e --no-start >/dev/null || return 1
    xml=$(lab_virsh dumpxml --inactive "$twin")
    vmctl delete "$twin" --yes >/dev/null || true
    if grep -q "firmware='efi'" <<<"$xml" && ! grep -q "<feature enabled='no' name='secure-boot'/>" <<<"$xml" &&
        ! grep -q '<loader' <<<"$xml"; then
        echo "vmctl --firmware efi leaves Secure Boot to libvirt's autoselection, which enables it here:" >&2
        sed -n '/<os/,/<\/os>/p' <<<"$xml" >&2
        echo "expected <firmware><feature enabled='no' name='secure-boot'/></firmware> in <os>" >&2
        rc=1
    fi
    return $rc
}
if [[ $boot == disk ]]; then
    e2e_step "vmctl --firmware efi asks for UEFI without Secure Boot" secure_boot_off
fi

create() {
    vmctl create ubuntu "$vm" "${boot_args[@]}" \
        --bridge "$GVB_LAB_BRIDGE" --ip "$vm_ip/24" --gateway 198.18.0.1 --dns 198.18.0.1 \
        --domain-type qemu --cpu-mode "$cpu_mode" \
        --cpus 2 --memory 1024 \
        --ssh-key "$work/id_ed25519.pub" --user e2e \
        --wait --wait-timeout "$wait_timeout"
}
e2e_step "vmctl create ubuntu $vm --wait ($boot boot)" create

# `create --wait` means ready: cloud-init must already be done, asked WITHOUT --wait (vmctl's
# `packages:` finds no mirror in the lab, but the agent is in the image, so apt has nothing to fetch).
cloud_init_done() {
    local out
    out=$(vmctl ssh "$vm" -- cloud-init status --long) || true
    echo "$out"
    grep -qx 'status: done' <<<"$out" || { echo "cloud-init not done after create --wait" >&2; return 1; }
}
e2e_step "cloud-init done when create --wait returned" cloud_init_done

ssh_uname() {
    local out
    out=$(vmctl ssh "$vm" -- uname -a)
    echo "$out"
    [[ $out == Linux\ * ]] || { echo "unexpected uname output: $out" >&2; return 1; }
}
e2e_step "vmctl ssh $vm -- uname -a" ssh_uname

if [[ $boot == disk ]]; then
    efi_and_grown() {
        local out
        out=$(vmctl ssh "$vm" -- 'test -d /sys/firmware/efi && echo efi=yes; df -B1M --output=size / | tail -n1')
        echo "$out"
        grep -qx 'efi=yes' <<<"$out" || { echo "the guest did not boot with UEFI" >&2; return 1; }
        (($(tail -n1 <<<"$out") > 3072)) || { echo "root fs not grown to the 4G disk" >&2; return 1; }
    }
    e2e_step "guest booted by UEFI, root grown to the 4G disk" efi_and_grown
fi

# A fact for whoever reads the log, not asserted: whether the guest agent reports the address.
guest_agent() {
    lab_wait_for 60 "guest agent" lab_virsh domifaddr "$vm" --source agent &&
        lab_virsh domifaddr "$vm" --source agent || echo "guest agent: no answer within 60 s"
}
e2e_step "guest agent (informational)" guest_agent

list_json() {
    local json
    json=$(vmctl list --json)
    VM=$vm IP=$vm_ip python3 -c '
import json, os, sys
doc = json.loads(sys.stdin.read())
vm, ip = os.environ["VM"], os.environ["IP"]
def objects(x):
    if isinstance(x, dict):
        yield x
        for v in x.values(): yield from objects(v)
    elif isinstance(x, list):
        for v in x: yield from objects(v)
def strings(x):
    if isinstance(x, str): yield x
    elif isinstance(x, dict):
        for v in x.values(): yield from strings(v)
    elif isinstance(x, list):
        for v in x: yield from strings(v)
mine = [o for o in objects(doc) if o.get("name") == vm]
if not mine: sys.exit(f"{vm} not in vmctl list --json: {doc}")
if not any(s == ip or s.startswith(ip + "/") for s in strings(mine[0])):
    sys.exit(f"{vm} listed without its IP {ip}: {mine[0]}")
print(f"listed: {json.dumps(mine[0])}")
' <<<"$json"
}
e2e_step "vmctl list --json shows $vm with $vm_ip" list_json

e2e_step "vmctl stop $vm" vmctl stop "$vm" --timeout 180
state_off() { [[ $(lab_virsh domstate "$vm") == "shut off" ]]; }
e2e_step "domain is shut off" state_off

# Day 2 on the stopped VM (issue 17), no boot needed: autostart is on by default, a resize lands
# in the definition, and a clone (no start) gets its own name, MAC and files, and no NVRAM of the
# source's (libvirt makes its own from the firmware's template).
day2_stopped() {
    local json xml clone=${vm}-clone
    json=$(vmctl list --json)
    VM=$vm python3 -c '
import json, os, sys
vms = [v for v in json.loads(sys.stdin.read())["vms"] if v["name"] == os.environ["VM"]]
if not vms or vms[0]["autostart"] is not True: sys.exit(f"autostart not on: {vms}")
' <<<"$json" || return 1
    vmctl resize "$vm" --cpus 3 --memory 1536 || return 1
    # Read the XML whole first: `virsh … | grep -q` fails under pipefail when grep's early exit
    # SIGPIPEs virsh (the <vcpu> line comes early).
    xml=$(lab_virsh dumpxml --inactive "$vm")
    grep -q "<vcpu placement='static'>3</vcpu>" <<<"$xml" ||
        { echo "resize did not reach the definition" >&2; return 1; }
    vmctl clone "$vm" "$clone" --dhcp --no-start || return 1
    xml=$(lab_virsh dumpxml --inactive "$clone")
    grep -q "$VMCTL_STORAGE_DIR/$clone/disk.qcow2" <<<"$xml" || { echo "clone not on its own disk" >&2; return 1; }
    if grep -q "<nvram[^>]*>[^<]*/${vm}_VARS" <<<"$xml"; then
        echo "the clone uses the source's NVRAM" >&2
        return 1
    fi
    vmctl delete "$clone" --yes
}
e2e_step "day 2 on the stopped VM: autostart, resize, clone --no-start" day2_stopped

vm_dir_listing=$(find "$VMCTL_STORAGE_DIR" -mindepth 1 | sort)
lab_log "storage before delete: $(tr '\n' ' ' <<<"$vm_dir_listing")"
e2e_step "vmctl delete $vm --yes" vmctl delete "$vm" --yes

nothing_left() {
    local ok=0 left
    if domain_exists; then
        echo "domain $vm still defined" >&2
        ok=1
    fi
    left=$(find "$VMCTL_STORAGE_DIR" -mindepth 1 \( -name '*.qcow2' -o -name '*.iso' -o -name '*.img' -o -path "*/$vm*" \))
    if [[ -n $left ]]; then
        echo "left in the storage dir: $left" >&2
        ok=1
    fi
    if [[ $(stat -c '%s %Y' "$base") != "$base_stat_before" ]]; then
        echo "base image $base changed (size/mtime)" >&2
        ok=1
    fi
    return $ok
}
e2e_step "no domain, overlay or seed left; base image untouched" nothing_left
