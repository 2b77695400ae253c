#!/usr/bin/env bash
# Issue 6 end to end with a real guest: `vmctl create ubuntu --ip auto` picks a free address on the lab
# bridge (after an ARP scan, outside VMCTL_RESERVED_IPS), the guest boots with it, then
#   - `vmctl ip check --json` finds it by ARP and names the VM that owns its MAC,
#   - `vmctl ip check ADDR` exits 1 naming the MAC and the VM, a free address exits 0,
#   - `vmctl ip list --json` gives its address with its source,
#   - a static `--ip` on the bridge's own address (it answers ARP) is refused with exit 2,
# and everything is deleted again. vmctl runs under `ip netns exec vmlab` (the bridge lives there).
# Env: VMCTL (binary), GVB_E2E_WAIT_TIMEOUT (default 600 s), GVB_LAB_KEEP=1 (keep VM and scratch dir).
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_gate

vm=e2e-ip
wait_timeout=${GVB_E2E_WAIT_TIMEOUT:-600}

"$REPO/tests/lab/up.sh"
image=$("$REPO/tests/lab/build-image.sh" | tail -n1)
vmctl_bin=$(e2e_find_vmctl)

mkdir -p /var/lib/gvb-lab
chmod 0755 /var/lib/gvb-lab
work=$(mktemp -d /var/lib/gvb-lab/e2e-ip.XXXXXX)
chmod 0755 "$work"
mkdir -p "$work/vms" "$work/images" "$work/state"
: >"$work/config.toml"
export VMCTL_CONNECT=$GVB_LAB_URI
export VMCTL_STORAGE_DIR=$work/vms
export VMCTL_IMAGE_CACHE=$work/images
export VMCTL_STATE_DIR=$work/state
export VMCTL_BRIDGE=$GVB_LAB_BRIDGE
# Lab addresses below .70 belong to other tests (tests/lab/README.md).
export VMCTL_RESERVED_IPS=198.18.0.1-198.18.0.69
ssh-keygen -q -t ed25519 -N '' -C gvb-e2e -f "$work/id_ed25519"

vmctl() { lab_in_ns "$vmctl_bin" --config "$work/config.toml" "$@"; }
domain_exists() { lab_virsh dominfo "$1" >/dev/null 2>&1; }
remove_domain() {
    lab_virsh destroy "$1" >/dev/null 2>&1 || true
    lab_virsh undefine "$1" --nvram >/dev/null 2>&1 || lab_virsh undefine "$1" >/dev/null 2>&1 || true
}
for d in "$vm" "$vm-static"; do
    if domain_exists "$d"; then
        lab_log "removing leftover domain $d from an earlier run"
        remove_domain "$d"
    fi
done

on_exit() {
    local rc=$?
    if ((rc != 0)) && [[ -f $VMCTL_STORAGE_DIR/$vm/console.log ]]; then
        echo "---- serial log of $vm (last 40 lines) ----" >&2
        tail -n 40 "$VMCTL_STORAGE_DIR/$vm/console.log" >&2
    fi
    if [[ ${GVB_LAB_KEEP:-0} == 1 ]]; then
        lab_log "GVB_LAB_KEEP=1: kept $vm and $work"
    else
        for d in "$vm" "$vm-static"; do domain_exists "$d" && remove_domain "$d"; done
        rm -rf "$work"
    fi
    lab_log "$(basename "$0"): $( ((rc == 0)) && echo PASSED || echo FAILED) in $(lab_elapsed "$E2E_T0" "$(lab_now)") s"
}
trap on_exit EXIT

boot_args=(--image "$image/base.qcow2" --kernel "$image/vmlinuz" --initrd "$image/initrd.img"
    --kernel-args 'root=/dev/vda rw console=ttyS0 net.ifnames=0' --firmware bios
    --domain-type qemu --cpu-mode host-model --cpus 2 --memory 1024)

create_auto() {
    vmctl create ubuntu "$vm" "${boot_args[@]}" --ip auto --gateway 198.18.0.1 --dns 198.18.0.1 \
        --ssh-key "$work/id_ed25519.pub" --user e2e --wait --wait-timeout "$wait_timeout" --json >"$work/created.json"
}
e2e_step "vmctl create ubuntu $vm --ip auto --wait" create_auto
read -r vm_ip vm_mac < <(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
print(c["ip"].split("/")[0], c["mac"])' "$work/created.json")
lab_log "$vm got $vm_ip (MAC $vm_mac)"

check_subnet() {
    vmctl ip check --json >"$work/check.json"
    IP=$vm_ip MAC=$vm_mac VM=$vm python3 -c '
import json, os, sys
r = json.load(open(sys.argv[1]))
ip, mac, vm = os.environ["IP"], os.environ["MAC"], os.environ["VM"]
assert r["subnet"] == "198.18.0.0/24", r["subnet"]
n = int(ip.rsplit(".", 1)[1])
assert n >= 70, f"--ip auto picked {ip} inside VMCTL_RESERVED_IPS"
mine = [u for u in r["used"] if u["ip"] == ip]
assert mine and mine[0]["mac"] == mac and mine[0]["vm"] == vm, (ip, mine, r["used"])
assert not r["conflicts"], r["conflicts"]
print(len(r["used"]), "used,", r["free_count"], "free,", r["duration_ms"], "ms,", r["method"], mine[0])
' "$work/check.json"
}
e2e_step "vmctl ip check: $vm found by ARP, named by its MAC" check_subnet

check_one() {
    local rc=0 out
    out=$(vmctl ip check "$vm_ip") || rc=$?
    echo "$out"
    ((rc == 1)) || { echo "expected exit 1 for taken $vm_ip, got $rc" >&2; return 1; }
    [[ $out == *"$vm_mac"* && $out == *"VM $vm"* ]] || { echo "the holder is not named" >&2; return 1; }
    vmctl ip check 198.18.0.254 # nothing lives there: exit 0
}
e2e_step "vmctl ip check $vm_ip exits 1 naming $vm; a free address exits 0" check_one

list_sources() {
    vmctl ip list --json >"$work/list.json"
    IP=$vm_ip VM=$vm python3 -c '
import json, os, sys
r = json.load(open(sys.argv[1]))
rows = [a for a in r["addresses"] if a["vm"] == os.environ["VM"]]
assert rows and rows[0]["ip"] == os.environ["IP"] and rows[0]["source"] == "metadata", rows
print(rows)
' "$work/list.json"
}
e2e_step "vmctl ip list: $vm with $vm_ip from vmctl metadata" list_sources

refuse_static() {
    local rc=0 err
    err=$(vmctl create ubuntu "$vm-static" "${boot_args[@]}" --ip 198.18.0.1/24 \
        --ssh-key "$work/id_ed25519.pub" --no-start 2>&1 >/dev/null) || rc=$?
    echo "$err"
    ((rc == 2)) || { echo "expected exit 2, got $rc" >&2; return 1; }
    [[ $err == *"answers ARP"*"this host"* ]] || { echo "refusal does not name the holder" >&2; return 1; }
    ! domain_exists "$vm-static"
}
e2e_step "static --ip on an address that answers ARP is refused (exit 2)" refuse_static

e2e_step "vmctl stop $vm --force" vmctl stop "$vm" --timeout 60 --force
e2e_step "vmctl delete $vm --yes" vmctl delete "$vm" --yes
