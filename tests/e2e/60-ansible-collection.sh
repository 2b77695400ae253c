#!/usr/bin/env bash
# The Ansible collection (packaging/ansible, gpu_vm_bootstrap.vmctl) with Debian's ansible-core:
#   1. `ansible-test sanity` on the collection (its own virtual environments, requirements from
#      PyPI; the pip bootstrap script it would download from ci-files.testing.ansible.com is
#      stood in for by tests/ansible/get_pip_from_ensurepip.py);
#   2. the vmctl_vm module against the lab libvirtd (a real domain, VM ansible1 at 198.18.0.193):
#      stopped (created with --no-start), a check-mode run of started that changes nothing,
#      started, stopped, absent; each state run twice, the second run reporting no change;
#   3. the gpu_host role on a fixture host root: the first run applies, the second has nothing
#      to do;
#   4. the vmctl_hosts_info module and the vmctl_hosts inventory plugin against a stand-in vmctl
#      printing fixed `hosts status` / `hosts list` JSON (tests/ansible/hosts_info.yml; no VM),
#      then against the real vmctl with this machine and one unreachable host; their JSON
#      parsing is unit-tested with vmctl_vm's decisions (tests/ansible/test_*.py).
# Ansible runs on this machine (connection local) inside netns vmlab, where the lab bridge is;
# the run over SSH against a second host is tests/e2e/61-remote-host.sh.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_gate

command -v ansible-playbook >/dev/null && command -v ansible-test >/dev/null ||
    lab_die "ansible-core is not installed" "run scripts/install-deps.sh (Debian's ansible-core)"

vm=ansible1
"$REPO/tests/lab/up.sh"
image=$("$REPO/tests/lab/build-image.sh" | tail -n1)
vmctl_bin=$(e2e_find_vmctl)
(cd "$REPO" && cargo build -q -p gpu-vm-bootstrap --bin gpu-vm-bootstrap --example fixture-tree) ||
    lab_die "cargo build -p gpu-vm-bootstrap failed"
target=${CARGO_TARGET_DIR:-$REPO/target}

mkdir -p /var/lib/gvb-lab
chmod 0755 /var/lib/gvb-lab
work=$(mktemp -d /var/lib/gvb-lab/e2e-ansible.XXXXXX)
chmod 0755 "$work"
mkdir -p "$work/vms" "$work/images" "$work/state"
: >"$work/config.toml"
# The module runs vmctl with the playbook's environment (connection local).
export VMCTL_CONNECT=$GVB_LAB_URI VMCTL_STORAGE_DIR=$work/vms VMCTL_IMAGE_CACHE=$work/images
export VMCTL_STATE_DIR=$work/state VMCTL_BRIDGE=$GVB_LAB_BRIDGE
ssh-keygen -q -t ed25519 -N '' -C gvb-e2e -f "$work/id_ed25519"
on_exit() {
    lab_virsh destroy "$vm" >/dev/null 2>&1 || true
    lab_virsh undefine "$vm" --nvram >/dev/null 2>&1 || true
    [[ ${GVB_LAB_KEEP:-0} == 1 ]] || rm -rf "$work"
}
trap on_exit EXIT

# The collection where Ansible looks for it: COLLECTIONS_PATH/ansible_collections/NS/NAME.
coll=$work/collections/ansible_collections/gpu_vm_bootstrap/vmctl
mkdir -p "$(dirname "$coll")"
cp -r "$REPO/packaging/ansible" "$coll"
export ANSIBLE_COLLECTIONS_PATH=$work/collections ANSIBLE_NOCOLOR=1 ANSIBLE_LOCALHOST_WARNING=0
export ANSIBLE_INVENTORY_UNPARSED_WARNING=0

sanity() {
    # ansible-test keeps its virtual environments under ~/.ansible/test: a HOME of its own,
    # cached with the lab image so a second run reuses them.
    local home=$GVB_LAB_CACHE/ansible-test-home
    mkdir -p "$home/.ansible/test/cache"
    cp "$REPO/tests/ansible/get_pip_from_ensurepip.py" "$home/.ansible/test/cache/get_pip_21_3_1.py"
    local py
    # Debian's python3, the one ansible-core is installed for (not a pyenv or venv one on PATH).
    py=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    (cd "$coll" && HOME=$home ansible-test sanity --python "$py" --color no)
}
e2e_step "ansible-test sanity" sanity
e2e_step "unit: vmctl_vm decisions, hosts status/list parsing" env PYTHONPATH="$work/collections" \
    /usr/bin/python3 -m unittest discover -s "$REPO/tests/ansible" -p 'test_*.py'

# play PLAYBOOK [ansible-playbook args…]: runs it and prints the recap's changed count.
play() {
    local book=$1 out
    shift
    out=$(lab_in_ns ansible-playbook -i localhost, -c local "$REPO/tests/ansible/$book" "$@") || {
        printf '%s\n' "$out" >&2
        return 1
    }
    printf '%s\n' "$out" >"$work/last-play.txt"
    sed -n 's/^localhost *: .*changed=\([0-9]*\).*/\1/p' <<<"$out"
}

# The module and the inventory plugin on vmctl's `hosts status` JSON: nothing changes.
hosts_info() {
    local changed
    changed=$(play hosts_info.yml) || return 1
    [[ $changed == 0 ]] || {
        cat "$work/last-play.txt" >&2
        lab_die "hosts_info.yml: changed=$changed (want 0: the module and the plugin only read)"
    }
}
e2e_step "vmctl_hosts_info and the vmctl_hosts inventory (stand-in vmctl)" hosts_info

# The same on the real vmctl: this machine plus one configured host that does not exist (nothing at
# 198.18.0.250 in the lab netns), unreachable within the 2 s connect timeout.
hosts_info_real() {
    local config=$work/hosts.toml changed
    : >"$config"
    lab_in_ns "$vmctl_bin" --config "$config" hosts add gone --ssh lab@198.18.0.250 --no-check >/dev/null ||
        lab_die "vmctl hosts add gone --no-check failed"
    changed=$(play hosts_info.yml --tags real -e "real_vmctl=$vmctl_bin" -e "real_config=$config" \
        -e real_timeout=2 -e '{"expect_reachable": ["local"], "expect_unreachable": ["gone"]}') || return 1
    [[ $changed == 0 ]] || lab_die "hosts_info.yml --tags real: changed=$changed (want 0)"
}
e2e_step "vmctl_hosts_info and the vmctl_hosts inventory (real vmctl, one host unreachable)" hosts_info_real

vars=$work/vars.json
python3 - "$vars" "$vm" "$vmctl_bin" "$work" "$image" <<'PY'
import json, sys
path, vm, vmctl, work, image = sys.argv[1:]
json.dump({
    "vm_name": vm,
    "vmctl_bin": vmctl,
    "vmctl_config": f"{work}/config.toml",
    "vm_create_args": [
        "--image", f"{image}/base.qcow2", "--kernel", f"{image}/vmlinuz",
        "--initrd", f"{image}/initrd.img",
        "--kernel-args", "root=/dev/vda rw console=ttyS0 net.ifnames=0",
        "--firmware", "bios", "--bridge", "labbr0", "--ip", "198.18.0.193/24",
        "--gateway", "198.18.0.1", "--domain-type", "qemu", "--cpu-mode", "host-model",
        "--cpus", "1", "--memory", "512", "--ssh-key", f"{work}/id_ed25519.pub",
    ],
}, open(path, "w"))
PY

# converge STATE [extra args]: the first run changes something, the second nothing.
converge() {
    local state=$1 first second
    shift
    first=$(play vmctl_vm.yml -e "@$vars" -e "vm_state=$state" "$@")
    second=$(play vmctl_vm.yml -e "@$vars" -e "vm_state=$state" "$@")
    [[ $first == 1 && $second == 0 ]] || {
        cat "$work/last-play.txt" >&2
        lab_die "vmctl_vm state=$state: changed=$first then changed=$second (want 1 then 0)"
    }
}
state_is() { [[ $(lab_virsh domstate "$vm" 2>/dev/null | head -n1) == "$1" ]]; }

vm_states() {
    converge stopped
    state_is "shut off" || lab_die "after state=stopped the domain is $(lab_virsh domstate "$vm")"
    # Check mode says it would start the VM, and starts nothing.
    [[ $(play vmctl_vm.yml -e "@$vars" -e vm_state=started --check) == 1 ]] ||
        lab_die "check mode did not report the start"
    state_is "shut off" || lab_die "check mode started the VM"
    converge started
    state_is running || lab_die "after state=started the domain is $(lab_virsh domstate "$vm")"
    converge stopped
    state_is "shut off" || lab_die "after the second state=stopped: $(lab_virsh domstate "$vm")"
    converge absent
    ! lab_virsh dominfo "$vm" >/dev/null 2>&1 || lab_die "after state=absent the domain is still defined"
    [[ -z $(ls -A "$work/vms") ]] || lab_die "state=absent left files: $(ls -A "$work/vms")"
}
e2e_step "vmctl_vm: stopped, check mode, started, stopped, absent (each twice)" vm_states

role() {
    local root=$work/host first second
    "$target/debug/examples/fixture-tree" amd-b550m-gt710-rtx2070s "$root" dhcp >/dev/null
    first=$(play gpu_host.yml -e "bootstrap_bin=$target/debug/gpu-vm-bootstrap" -e "host_root=$root")
    second=$(play gpu_host.yml -e "bootstrap_bin=$target/debug/gpu-vm-bootstrap" -e "host_root=$root")
    [[ $first -ge 1 && $second == 0 ]] || {
        cat "$work/last-play.txt" >&2
        lab_die "gpu_host role: changed=$first then changed=$second (want at least 1, then 0)"
    }
    grep -q vfio-pci "$root/etc/modprobe.d/vfio.conf" || lab_die "the role's apply did not bind vfio-pci"
}
e2e_step "gpu_host role on a fixture host root (twice)" role
