#!/usr/bin/env bash
# Issue 20, a real second host: one lab guest, rhost1 (198.18.0.194), is a vmctl host of its own:
# libvirtd running in it (TCG), a bridge br0 198.18.2.1/24 with one neighbour (198.18.2.7, a veth
# into a network namespace of the guest), and a fixture host root with two GPUs standing in for
# the hardware. Then, over SSH:
#   1. tests/ansible/remote_host.yml (ansible-playbook on this machine, inside netns vmlab): the
#      vmctl and gpu-vm-bootstrap .debs through the gpu_host role on the fixture root, and a
#      define-only VM through the vmctl_vm module; run twice, the second run changes nothing;
#   2. `vmctl --host rhost1` (config: `hosts add`, sudo, the lab key, `vmctl =` a wrapper on the
#      guest running the .deb's vmctl on the fixture root): create --no-start, list (this
#      machine's libvirt does not have the VM), gpu status (the fixture's GPUs), ip check (the
#      guest's br0 scanned, 198.18.2.7 found), delete;
#   3. `vmctl hosts status --json` over local + rhost1 + gone (198.18.0.250, where nothing
#      answers), then the Ansible module and inventory plugin on the same hosts: exit 1, rhost1
#      reachable with its versions and GPUs, gone unreachable;
#   4. a Talos cluster across this machine and rhost1 (`cluster create --hosts local,rhost1
#      --no-start`): rhost1's lan0 bridges its eth0 onto the lab LAN (198.18.0.0/24), the LAN of
#      this machine's lab bridge, so both hosts scan one LAN. Refusals first (too few GPUs, more
#      control planes than hosts, an unreachable host: nothing made anywhere), then the control
#      plane here and a worker and a GPU worker (the fixture's isolated RTX 2070 SUPER) on
#      rhost1, every address free in both scans; rhost1's seeds are 0600, carry configs made from
#      this machine's secrets, and rhost1 keeps no secrets; `cluster show` across both hosts,
#      then `cluster destroy` removes the nodes on both. A stand-in Image Factory in the lab netns
#      (tests/lab/factory_stub.py on 0.0.0.0) serves both hosts.
# Cost: one guest boot; every VM on the guest is define-only.
# Env: GVB_E2E_CPU_MODE (default host-model), GVB_E2E_DEBS=DIR (reuse the .debs in DIR instead of
# packaging them from the debug build), GVB_LAB_KEEP=1 (keep the guest and the scratch dir).
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_gate

command -v ansible-playbook >/dev/null ||
    lab_die "ansible-core is not installed" "run scripts/install-deps.sh (Debian's ansible-core)"

vm=rhost1
ip_addr=198.18.0.194
mac=52:54:00:c6:00:c2
gone_ip=198.18.0.250
user=lab
guest_dir=/srv/gvb-rhost           # the test's files on the guest
guest_vms=(rh-ans1 rh-vm1 gx61-w-1 gx61-gpu-1) # the define-only VMs made on the guest
fixture=amd-b550m-gt710-rtx2070s   # GT 710 (boot VGA) + RTX 2070 SUPER
cluster=gx61                       # step 4: gx61-cp-1 here, gx61-w-1 and gx61-gpu-1 on rhost1
talos_version=v1.12.1
factory_port=${GVB_E2E_RHOST_FACTORY_PORT:-18795}

e2e_step "lab up" "$REPO/tests/lab/up.sh"
image=$("$REPO/tests/lab/build-image.sh" | tail -n1)
vmctl_bin=$(e2e_find_vmctl)
(cd "$REPO" && cargo build -q -p gpu-vm-bootstrap --bin gpu-vm-bootstrap --example fixture-tree) ||
    lab_die "cargo build -p gpu-vm-bootstrap failed"
target=${CARGO_TARGET_DIR:-$REPO/target}

mkdir -p /var/lib/gvb-lab
chmod 0755 /var/lib/gvb-lab
work=$(mktemp -d /var/lib/gvb-lab/e2e-rhost.XXXXXX)
chmod 0755 "$work" # qemu runs as libvirt-qemu and must reach the overlay, seed and log
mkdir -p "$work/vms" "$work/images" "$work/state" "$work/bin" "$work/debs"
ssh-keygen -q -t ed25519 -N '' -C gvb-e2e-rhost -f "$work/id_ed25519"

# Every ssh of this test (ours, Ansible's, vmctl's) keeps the guest's host key in the scratch dir:
# vmctl runs plain `ssh` (BatchMode), which would otherwise ask about an unknown key, or read and
# write root's ~/.ssh/known_hosts. The wrapper comes first in vmctl's PATH.
ssh_opts=(-o UserKnownHostsFile="$work/known_hosts" -o StrictHostKeyChecking=accept-new -o LogLevel=ERROR)
python3 - "$work/bin/ssh" "${ssh_opts[@]}" <<'PY'
import os, shlex, sys
path, opts = sys.argv[1], sys.argv[2:]
with open(path, "w") as f:
    f.write("#!/bin/sh\nexec /usr/bin/ssh %s \"$@\"\n" % " ".join(shlex.quote(o) for o in opts))
os.chmod(path, 0o755)
PY
gssh() { # gssh COMMAND…: a command on the guest as the lab user
    lab_in_ns "$work/bin/ssh" -i "$work/id_ed25519" -o BatchMode=yes -o ConnectTimeout=3 "$user@$ip_addr" "$@"
}

# This machine's vmctl state stays in the scratch dir (the local row of `hosts status`).
export VMCTL_CONNECT=$GVB_LAB_URI VMCTL_STORAGE_DIR=$work/vms VMCTL_IMAGE_CACHE=$work/images
export VMCTL_STATE_DIR=$work/state

on_exit() {
    local rc=$?
    if ((rc != 0)); then
        echo "---- serial log of $vm (last 40 lines) ----" >&2
        tail -n 40 "$work/serial.log" >&2 2>/dev/null || true
        echo "---- cloud-init output on $vm (last 30 lines) ----" >&2
        gssh sudo tail -n 30 /var/log/cloud-init-output.log >&2 2>/dev/null || true
    fi
    if [[ ${GVB_LAB_KEEP:-0} == 1 ]]; then
        lab_log "GVB_LAB_KEEP=1: kept domain $vm and $work"
        return
    fi
    # The guest's own domains first (define-only, so only undefined), then the guest.
    if lab_virsh domstate "$vm" 2>/dev/null | grep -q running; then
        for d in "${guest_vms[@]}"; do
            gssh sudo virsh -q -c qemu:///system undefine "$d" >/dev/null 2>&1 || true
        done
    fi
    for d in "$vm" "$cluster-cp-1"; do
        lab_virsh destroy "$d" >/dev/null 2>&1 || true
        lab_virsh undefine "$d" --nvram >/dev/null 2>&1 || lab_virsh undefine "$d" >/dev/null 2>&1 || true
    done
    [[ -f $work/factory.pid ]] && kill "$(cat "$work/factory.pid")" 2>/dev/null
    rm -rf "$work"
}
trap on_exit EXIT

# --- the guest: libvirtd enabled, br0 with one neighbour in a netns, then a ready marker ----------
boot() {
    mkdir "$work/seed"
    python3 - "$work/seed" "$vm" "$user" "$work/id_ed25519.pub" "$mac" "$ip_addr" "$guest_dir" "$factory_port" <<'PY'
import json, sys
seed, name, user, pubkey, mac, ip, gdir, port = sys.argv[1:]
key = open(pubkey).read().strip()
setup = " && ".join([
    # libvirtd is in the image but disabled (tests/lab/build-image.sh): only this guest runs it.
    "systemctl enable --now libvirtd.service",
    # The fixture host root's directory (the playbook unpacks the fixture into it) and a small
    # base image for the define-only VMs.
    f"mkdir -p {gdir}/root",
    f"qemu-img create -q -f qcow2 {gdir}/tiny.qcow2 64M",
    "ip link add br0 type bridge",
    "ip addr add 198.18.2.1/24 dev br0",
    "ip link set br0 up",
    "ip netns add nb",
    "ip link add vnb0 type veth peer name vnb1",
    "ip link set vnb1 netns nb",
    "ip link set vnb0 master br0 up",
    "ip -n nb addr add 198.18.2.7/24 dev vnb1",
    "ip -n nb link set vnb1 up",
    "ip -n nb link set lo up",
    # lan0: eth0 bridged onto the lab LAN, the address moved to the bridge (as gpu-vm-bootstrap's
    # bridge phase does on a real host), so VMs on lan0 share the LAN of this machine's lab bridge.
    "ip link add lan0 type bridge",
    f"ip link set lan0 address {mac}",
    "ip addr flush dev eth0",
    "ip link set eth0 master lan0",
    "ip link set lan0 up",
    f"ip addr add {ip}/24 dev lan0",
    "ip route replace default via 198.18.0.1 dev lan0",
    "touch /run/gvb-rhost-ready",
])
user_data = {
    "users": [{
        "name": user, "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
        "lock_passwd": True, "ssh_authorized_keys": [key],
    }],
    "ssh_pwauth": False,
    "ssh_genkeytypes": ["ed25519"],
    "manage_etc_hosts": "localhost",
    "runcmd": [["sh", "-ec", setup]],
    "write_files": [
        # The vmctl of [hosts.rhost1]: the .deb's vmctl, its host facts read from the fixture.
        # Its default bridge is lan0; Talos images come from the stand-in factory in the lab netns.
        {"path": "/usr/local/bin/vmctl-fixture", "permissions": "0755",
         "content": "#!/bin/sh\nexec env VMCTL_BRIDGE=lan0 VMCTL_DOMAIN_TYPE=qemu VMCTL_CPU_MODE=host-model "
                    f"VMCTL_TALOS_FACTORY_URL=http://198.18.0.1:{port} VMCTL_GITHUB_API_URL=http://198.18.0.1:{port} "
                    f"/usr/bin/vmctl --host-root {gdir}/root \"$@\"\n"},
        # The define-only VMs' SSH key (read on the guest by the guest's vmctl).
        {"path": f"{gdir}/id.pub", "permissions": "0644", "content": key + "\n"},
    ],
}
network = {"version": 2, "ethernets": {"eth0": {
    "match": {"macaddress": mac}, "set-name": "eth0", "addresses": [ip + "/24"],
    "gateway4": "198.18.0.1", "nameservers": {"addresses": ["198.18.0.1"]},
}}}
# JSON is YAML: cloud-init reads these as written by a serializer.
open(f"{seed}/user-data", "w").write("#cloud-config\n" + json.dumps(user_data, indent=1) + "\n")
open(f"{seed}/network-config", "w").write(json.dumps(network, indent=1) + "\n")
open(f"{seed}/meta-data", "w").write(json.dumps({"instance-id": name, "local-hostname": name}) + "\n")
PY
    cloud-init schema --config-file "$work/seed/user-data" >/dev/null ||
        lab_die "cloud-init schema rejected the user-data of $vm"
    genisoimage -quiet -output "$work/seed.iso" -volid cidata -joliet -rock \
        "$work/seed/user-data" "$work/seed/meta-data" "$work/seed/network-config"
    qemu-img create -q -f qcow2 -F qcow2 -b "$image/base.qcow2" "$work/disk.qcow2" 4G
    cat >"$work/domain.xml" <<EOF
<domain type='qemu'>
  <name>$vm</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>$image/vmlinuz</kernel>
    <initrd>$image/initrd.img</initrd>
    <cmdline>root=/dev/vda rw console=ttyS0 net.ifnames=0</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <cpu mode='${GVB_E2E_CPU_MODE:-host-model}'/>
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
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
  </devices>
</domain>
EOF
    lab_virsh define "$work/domain.xml" >/dev/null
    lab_virsh start "$vm" >/dev/null
}
e2e_step "boot $vm ($ip_addr): define + start" boot

# While the guest boots: the .debs, the fixture and the playbook's inputs.
debs() {
    if [[ -n ${GVB_E2E_DEBS:-} ]]; then
        cp "$GVB_E2E_DEBS"/vmctl_*.deb "$GVB_E2E_DEBS"/gpu-vm-bootstrap_*.deb "$work/debs/"
    else
        # The binaries just built (target/debug, stripped by build-debs.sh): no release build.
        (cd "$REPO" && BIN_DIR=$target/debug OUT=$work/debs packaging/build-debs.sh >/dev/null)
    fi
    [[ $(find "$work/debs" -name '*.deb' | wc -l) == 2 ]] || lab_die "want two .debs in $work/debs: $(ls "$work/debs")"
}
e2e_step "the .debs (vmctl, gpu-vm-bootstrap)" debs
"$target/debug/examples/fixture-tree" "$fixture" "$work/fixture" dhcp >/dev/null
# `vmctl create --bridge br0` looks for the bridge in the host root's /sys: the fixture shows the
# guest's real br0 (which the VMs and `ip check` use).
mkdir -p "$work/fixture/sys/class/net/br0/bridge" "$work/fixture/sys/class/net/lan0/bridge"
# The state after gpu-vm-bootstrap's VFIO phase and reboot: vfio-pci holds the isolated RTX 2070
# SUPER's functions (the listing has their driver_override only), so the GPU is free for a GPU
# worker (step 4).
mkdir -p "$work/fixture/sys/bus/pci/drivers/vfio-pci"
for f in "$work"/fixture/sys/bus/pci/devices/0000:2b:00.*; do
    ln -s ../../../bus/pci/drivers/vfio-pci "$f/driver"
done
tar -C "$work/fixture" -czf "$work/fixture.tar.gz" .
# The fixture's GPUs, as this machine's vmctl reads them: what rhost1 must report.
want_bdfs=$("$vmctl_bin" --host-root "$work/fixture" --json gpu status |
    python3 -c 'import json,sys; print(" ".join(sorted(g["bdf"] for g in json.load(sys.stdin)["gpus"])))')
[[ -n $want_bdfs ]] || lab_die "the fixture $fixture has no GPUs"

ready() { gssh test -e /run/gvb-rhost-ready; }
e2e_step "$vm ready: SSH, libvirtd, br0 (cloud-init)" \
    lab_wait_for "${GVB_E2E_WAIT_TIMEOUT:-600}" "$vm ready" ready

# --- 1. the playbook, twice -------------------------------------------------------------------
coll=$work/collections/ansible_collections/gpu_vm_bootstrap/vmctl
mkdir -p "$(dirname "$coll")"
cp -r "$REPO/packaging/ansible" "$coll"
export ANSIBLE_COLLECTIONS_PATH=$work/collections ANSIBLE_NOCOLOR=1 ANSIBLE_PIPELINING=1
export ANSIBLE_LOCAL_TEMP=$work/ansible-tmp ANSIBLE_SSH_CONTROL_PATH_DIR=$work/ansible-cp
python3 - "$work" "$vm" "$ip_addr" "$user" "$guest_dir" "${guest_vms[0]}" "${ssh_opts[*]}" <<'PY'
import glob, json, sys
work, vm, ip, user, gdir, ans_vm, ssh_opts = sys.argv[1:]
json.dump({"all": {"children": {"rhost": {"hosts": {vm: {
    "ansible_host": ip, "ansible_user": user,
    "ansible_ssh_private_key_file": f"{work}/id_ed25519",
    "ansible_ssh_common_args": ssh_opts,
    "ansible_python_interpreter": "/usr/bin/python3",
}}}}}}, open(f"{work}/inventory.json", "w"))
json.dump({
    "rhost_dir": gdir,
    "fixture_archive": f"{work}/fixture.tar.gz",
    "debs": sorted(glob.glob(f"{work}/debs/*.deb")),
    "vm_name": ans_vm,
    "vm_create_args": [
        "--image", f"{gdir}/tiny.qcow2", "--ssh-key", f"{gdir}/id.pub", "--no-start",
        "--firmware", "bios", "--domain-type", "qemu", "--cpu-mode", "host-model",
        "--cpus", "1", "--memory", "256", "--bridge", "br0",
    ],
}, open(f"{work}/vars.json", "w"))
PY
# play: runs the playbook and prints the recap's changed count for the guest.
play() {
    local out
    out=$(lab_in_ns ansible-playbook -i "$work/inventory.json" -e "@$work/vars.json" \
        "$REPO/tests/ansible/remote_host.yml") || {
        printf '%s\n' "$out" >&2
        return 1
    }
    printf '%s\n' "$out" >"$work/last-play.txt"
    sed -n "s/^$vm *: .*changed=\([0-9]*\).*/\1/p" <<<"$out"
}
playbook() {
    local first second
    first=$(play)
    lab_log "first run: changed=$first"
    second=$(play)
    lab_log "second run: changed=$second"
    [[ $first -ge 1 && $second == 0 ]] || {
        cat "$work/last-play.txt" >&2
        lab_die "remote_host.yml: changed=$first then changed=$second (want at least 1, then 0)"
    }
    gssh dpkg-query -W vmctl gpu-vm-bootstrap >&2
    [[ $(gssh sudo virsh -q -c qemu:///system domstate "${guest_vms[0]}") == "shut off" ]] ||
        lab_die "the playbook's VM ${guest_vms[0]} is not defined (shut off) on $vm"
}
e2e_step "remote_host.yml over SSH (twice: changed, then changed=0)" playbook

# --- 2. vmctl --host rhost1 -------------------------------------------------------------------
cfg=$work/hosts.toml
: >"$cfg"
# vmctl on this machine, inside the lab netns (where rhost1 is), with the ssh wrapper first.
v() { lab_in_ns env PATH="$work/bin:$PATH" "$vmctl_bin" --config "$cfg" "$@"; }
vr() { v --host "$vm" "$@"; }
add_hosts() {
    # Checked: the remote `vmctl --version` runs over SSH before anything is written.
    v hosts add "$vm" --ssh "$user@$ip_addr" --identity "$work/id_ed25519" --sudo \
        --vmctl /usr/local/bin/vmctl-fixture
    v hosts add gone --ssh "$user@$gone_ip" --identity "$work/id_ed25519" --no-check
    v --json hosts list >"$work/hosts-list.json"
    python3 - "$work/hosts-list.json" "$vm" <<'PY'
import json, sys
names = [h["name"] for h in json.load(open(sys.argv[1]))["hosts"]]
assert sorted(names) == sorted([sys.argv[2], "gone"]), names
PY
}
e2e_step "hosts add $vm (checked), gone (--no-check)" add_hosts

vm2=${guest_vms[1]}
remote_create() {
    vr --json create ubuntu "$vm2" --image "$guest_dir/tiny.qcow2" --ssh-key "$guest_dir/id.pub" \
        --no-start --firmware bios --domain-type qemu --cpu-mode host-model --cpus 1 --memory 256 \
        --bridge br0 >"$work/create.json"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["defined"] and not d["started"], d' \
        "$work/create.json"
}
e2e_step "--host $vm create ubuntu $vm2 --no-start" remote_create

remote_list() {
    vr --json list >"$work/list.json"
    python3 - "$work/list.json" "$vm2" "${guest_vms[0]}" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
rows = doc["vms"] if isinstance(doc, dict) else doc
names = {r["name"]: r for r in rows}
for want in sys.argv[2:]:
    assert want in names, f"{want} not in the remote list: {sorted(names)}"
PY
    ! lab_virsh dominfo "$vm2" >/dev/null 2>&1 || lab_die "$vm2 is defined on THIS machine's libvirt"
}
e2e_step "--host $vm list: $vm2 there (not here)" remote_list

remote_gpus() {
    local got
    got=$(vr --json gpu status |
        python3 -c 'import json,sys; print(" ".join(sorted(g["bdf"] for g in json.load(sys.stdin)["gpus"])))')
    [[ $got == "$want_bdfs" ]] || lab_die "--host $vm gpu status: GPUs [$got], the fixture's are [$want_bdfs]"
}
e2e_step "--host $vm gpu status: the fixture's GPUs" remote_gpus

remote_scan() {
    vr --json ip check --bridge br0 --method raw >"$work/ipcheck.json"
    python3 - "$work/ipcheck.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
taken = [u for u in doc["used"] if u["ip"] == "198.18.2.7" and not u["local"] and u["mac"]]
assert doc["interface"] == "br0" and doc["subnet"] == "198.18.2.0/24" and doc["method"] == "raw", doc
assert taken, "198.18.2.7 not found in the scan of br0: " + json.dumps(doc["used"])
PY
}
e2e_step "--host $vm ip check: br0 scanned, 198.18.2.7 found" remote_scan

status() {
    local rc=0
    v --json hosts status --timeout 3 >"$work/status.json" || rc=$?
    [[ $rc == 1 ]] || lab_die "hosts status exited $rc with an unreachable host (want 1)"
    python3 - "$work/status.json" "$vm" "$want_bdfs" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
vm, bdfs = sys.argv[2], sys.argv[3].split()
rows = {r["name"]: r for r in doc["hosts"]}
assert sorted(rows) == sorted(["local", vm, "gone"]), sorted(rows)
assert rows["local"]["reachable"], rows["local"]
r = rows[vm]
assert r["reachable"] and r["error"] is None, r
assert r["vmctl_version"] and r["bootstrap_version"], r
assert sorted(g["bdf"] for g in r["gpus"]) == bdfs, (r["gpus"], bdfs)
g = rows["gone"]
assert not g["reachable"] and g["error"] and g["error"]["message"], g
assert g["elapsed_ms"] < 10000, g
assert (doc["reachable"], doc["unreachable"]) == (2, 1), doc
print(f"local {rows['local']['elapsed_ms']} ms, {vm} {r['elapsed_ms']} ms, gone {g['elapsed_ms']} ms: "
      + g["error"]["message"], file=sys.stderr)
PY
}
e2e_step "hosts status: local + $vm reachable, gone unreachable (exit 1)" status

# The Ansible module and inventory plugin on the same three hosts (tests/ansible/hosts_info.yml, the
# part e2e 60 runs with this machine and `gone` only): rhost1 answers through them too.
hosts_info_remote() {
    lab_in_ns env PATH="$work/bin:$PATH" ansible-playbook -i localhost, -c local \
        "$REPO/tests/ansible/hosts_info.yml" --tags real -e "real_vmctl=$vmctl_bin" -e "real_config=$cfg" \
        -e real_timeout=3 -e "{\"expect_reachable\": [\"local\", \"$vm\"], \"expect_unreachable\": [\"gone\"]}" \
        >"$work/hosts-info.txt" || { cat "$work/hosts-info.txt" >&2; return 1; }
}
e2e_step "vmctl_hosts_info and the vmctl_hosts inventory: local + $vm, gone unreachable" hosts_info_remote

remote_delete() {
    vr delete "$vm2" --yes
    ! gssh sudo virsh -q -c qemu:///system dominfo "$vm2" >/dev/null 2>&1 ||
        lab_die "$vm2 is still defined on $vm after --host delete"
}
e2e_step "--host $vm delete $vm2 --yes" remote_delete

# --- 4. a cluster across this machine and rhost1 ------------------------------------------------
# This machine's side: the lab libvirt and bridge, the stand-in factory on the lab netns' 127.0.0.1
# (rhost1 reaches the same server on 198.18.0.1). Addresses below .200 belong to other lab tests
# (tests/lab/README.md): this machine's picks stay at .200 and up.
vc() {
    lab_in_ns env PATH="$work/bin:$PATH" VMCTL_BRIDGE="$GVB_LAB_BRIDGE" VMCTL_DOMAIN_TYPE=qemu \
        VMCTL_CPU_MODE=host-model VMCTL_TALOS_FACTORY_URL="http://127.0.0.1:$factory_port" \
        VMCTL_GITHUB_API_URL="http://127.0.0.1:$factory_port" VMCTL_RESERVED_IPS=198.18.0.1-198.18.0.199 \
        VMCTL_SSH_CONNECT_TIMEOUT=3 "$vmctl_bin" --config "$cfg" "$@"
}
cluster_args=(--version "$talos_version" --no-start --gateway 198.18.0.1 --cp-cpus 1 --cp-memory 512
    --cp-disk 1G --worker-cpus 1 --worker-memory 512 --worker-disk 1G)
factory() {
    qemu-img create -q -f qcow2 "$work/talos.qcow2" 64M
    # Not through lab_in_ns (a function: `&` would fork a shell and $! be its pid): `ip netns exec`
    # execs python, so the pid written is the server's.
    ip netns exec "$GVB_LAB_NETNS" python3 "$REPO/tests/lab/factory_stub.py" "$factory_port" \
        "$work/talos.qcow2" "$work/factory.ready" 0.0.0.0 2>"$work/factory.log" &
    echo $! >"$work/factory.pid"
    lab_wait_for 10 "factory stub on :$factory_port" test -s "$work/factory.ready"
}
e2e_step "stand-in Image Factory on 0.0.0.0:$factory_port (lab netns)" factory

# nothing_made: no cluster directory here, no node on either host.
nothing_made() {
    [[ ! -e $work/state/talos/$cluster ]] || lab_die "$1 left the cluster directory $work/state/talos/$cluster"
    ! lab_virsh dominfo "$cluster-cp-1" >/dev/null 2>&1 || lab_die "$1 left $cluster-cp-1 defined here"
    local left
    left=$(gssh sudo virsh -q -c qemu:///system list --all --name | grep "^$cluster-" || true)
    [[ -z $left ]] || lab_die "$1 left domains on $vm: $left"
}
# refused RC WHAT ARGS…: `cluster create` exits RC, prints WHAT, makes nothing.
refused() {
    local want=$1 what=$2 rc=0
    shift 2
    vc cluster create "$cluster" "${cluster_args[@]}" "$@" >"$work/refused.out" 2>&1 || rc=$?
    grep -q -- "$what" "$work/refused.out" || { cat "$work/refused.out" >&2; lab_die "no '$what' in the refusal"; }
    [[ $rc == "$want" ]] || { cat "$work/refused.out" >&2; lab_die "exit $rc, want $want"; }
    nothing_made "a refused create ($*)"
}
refusals() {
    refused 2 "need 2 free isolated GPU(s), and the hosts have 1" --hosts "local,$vm" --gpu-workers 2
    refused 2 "3 control planes need 3 distinct hosts" --hosts "local,$vm" --control-planes 3
    refused 1 "gone: ssh" --hosts "local,$vm,gone"
}
e2e_step "cluster create --hosts: refusals before anything is made (GPUs, control planes, unreachable)" refusals

spread_create() {
    vc --json cluster create "$cluster" "${cluster_args[@]}" --hosts "local,$vm" --workers 1 \
        --gpu-workers 1 >"$work/cluster.json"
    vc --json ip check >"$work/scan-here.json"
    python3 - "$work/cluster.json" "$work/scan-here.json" "$cluster" "$vm" "$want_bdfs" <<'PY'
import ipaddress, json, sys
doc, scan, cluster, vm, bdfs = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), *sys.argv[3:]
nodes = {n["name"]: n for n in doc["nodes"]}
assert sorted(nodes) == sorted(f"{cluster}-{n}" for n in ["cp-1", "w-1", "gpu-1"]), sorted(nodes)
cp, w, gpu = (nodes[f"{cluster}-{n}"] for n in ["cp-1", "w-1", "gpu-1"])
assert cp.get("host") is None, cp                    # this machine
assert w["host"] == vm and gpu["host"] == vm, (w, gpu)
assert gpu["gpus"] and gpu["gpus"][0] in bdfs.split(), (gpu, bdfs)
ips = [n["ip"] for n in doc["nodes"]]
assert len(set(ips)) == 3, ips
lan = ipaddress.ip_network("198.18.0.0/24")
assert all(ipaddress.ip_address(i) in lan and int(i.split(".")[3]) >= 200 for i in ips), ips
# Nothing else on the LAN answers at a node's address (this machine's scan after the create).
seen = {u["ip"] for u in scan["used"]}
assert not seen & set(ips), (seen & set(ips))
assert not doc["started"] and doc["endpoint"] == f"https://{cp['ip']}:6443", doc
print(f"{cluster}: cp {cp['ip']} here, w {w['ip']} and gpu {gpu['ip']} ({gpu['gpus'][0]}) on {vm}; "
      f"total {doc['timings']['total_ms']:.0f} ms", file=sys.stderr)
PY
    [[ $(lab_virsh domstate "$cluster-cp-1") == "shut off" ]] || lab_die "$cluster-cp-1 is not defined here"
    for n in w-1 gpu-1; do
        [[ $(gssh sudo virsh -q -c qemu:///system domstate "$cluster-$n") == "shut off" ]] ||
            lab_die "$cluster-$n is not defined on $vm"
    done
}
e2e_step "cluster create $cluster --hosts local,$vm --workers 1 --gpu-workers 1 --no-start" spread_create

# rhost1 got each config over SSH: its seed is 0600 and its user-data is a config made from this
# machine's secrets (the OS CA); rhost1 has no directory of the cluster (no secrets).
configs_there() {
    local seed=$guest_dir/root/var/lib/vmctl/vms/$cluster-gpu-1/seed.iso
    local mode
    mode=$(gssh "sudo stat -c '%a %U' $seed")
    [[ $mode == "600 root" ]] || lab_die "$seed on $vm is $mode, not 600 root"
    ! gssh sudo test -e "$guest_dir/root/var/lib/vmctl/talos/$cluster" ||
        lab_die "$vm keeps a directory of cluster $cluster"
    gssh sudo isoinfo -R -i "$seed" -x /user-data >"$work/gpu-1.user-data"
    # Debian's python3 (ansible-core's, which this test needs anyway) has PyYAML.
    /usr/bin/python3 - "$work/gpu-1.user-data" "$work/state/talos/$cluster/secrets.yaml" "$cluster-gpu-1" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
secrets = yaml.safe_load(open(sys.argv[2]))
node = sys.argv[3]
v1 = next(d for d in docs if "machine" in d)
assert v1["machine"]["type"] == "worker", v1["machine"]["type"]
assert v1["machine"]["ca"]["crt"] == secrets["certs"]["os"]["crt"], "the OS CA is not this machine's"
host = [d.get("hostname") for d in docs if d.get("kind") == "HostnameConfig"] or [v1["machine"]["network"].get("hostname")]
assert host == [node], host
PY
}
e2e_step "$vm: the node's seed is 0600, its config made here, no secrets kept there" configs_there

spread_show() {
    vc --json cluster show "$cluster" >"$work/show.json"
    python3 - "$work/show.json" "$vm" <<'PY'
import json, sys
doc, vm = json.load(open(sys.argv[1])), sys.argv[2]
got = {n["name"].rsplit("-", 2)[-2] + "-" + n["name"].rsplit("-", 1)[-1]: (n.get("host"), n["state"]) for n in doc["nodes"]}
assert got == {"cp-1": (None, "shut-off"), "w-1": (vm, "shut-off"), "gpu-1": (vm, "shut-off")}, got
assert doc["state"] == "stopped", doc["state"]
PY
    vc cluster show "$cluster" | grep -q "HOST" || lab_die "cluster show has no HOST column"
}
e2e_step "cluster show $cluster: the nodes' states from both hosts" spread_show

spread_destroy() {
    vc cluster destroy "$cluster" --yes >"$work/destroy.txt"
    cat "$work/destroy.txt" >&2
    nothing_made "cluster destroy"
    ! gssh sudo test -e "$guest_dir/root/var/lib/vmctl/vms/$cluster-gpu-1" ||
        lab_die "the storage of $cluster-gpu-1 is left on $vm"
}
e2e_step "cluster destroy $cluster --yes: nodes gone on both hosts" spread_destroy
lab_log "61-remote-host OK: total $(lab_elapsed "$E2E_T0" "$(lab_now)") s"
