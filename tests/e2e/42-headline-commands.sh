#!/usr/bin/env bash
# The project's four headline commands, typed exactly as the README shows them. What they act on is
# set by the environment, as a user's machine sets it by what it is:
#   1. `gpu-vm-bootstrap --gpu-mode passthrough` at a terminal (a pty; the user answers "y") on a fixture
#      host root built from a real host's listing (AMD B550, GT 710 boot VGA + RTX 2070 SUPER):
#      GVB_HOST_ROOT. Files land in the fixture, commands are listed as skipped.
#   2. `vmctl create talos --gpu` on that fixture (VMCTL_HOST_ROOT; the config file bootstrap wrote), the
#      local Image Factory stand-in, the lab bridge for the `--ip auto` scan (inside netns vmlab), and
#      libvirt's test driver served by the lab libvirtd (`test+unix:///default`): it is the one driver
#      here that starts a domain holding a PCI device that does not exist. It must name the VM talos-1,
#      pick a free lab address, pass the RTX (not the boot VGA GT 710) and start.
#   3. `vmctl gpu detach vm1` on the lab's qemu:///system, where vm1 holds that GPU in its configuration
#      (the lab has no IOMMU: passthrough there is config-only, as in 30-gpu-passthrough-config.sh).
#   4. `vmctl ip check` on the lab bridge.
# No GPU, no Talos node, no internet: the fixture, the test driver and the stand-in replace them.
#
# Env: GVB_E2E_HEADLINE_PORT (default 18791), GVB_LAB_KEEP=1 (keep the scratch dir).
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_gate

port=${GVB_E2E_HEADLINE_PORT:-18791}
version=v1.12.1
test_uri=test+unix:///default
vm1=vm1

"$REPO/tests/lab/up.sh"
vmctl_bin=$(e2e_find_vmctl)
(cd "$REPO" && cargo build -q -p gpu-vm-bootstrap --bin gpu-vm-bootstrap --example fixture-tree) ||
    lab_die "cannot build gpu-vm-bootstrap"
bin_dir=${CARGO_TARGET_DIR:-$REPO/target}/debug
[[ -x $bin_dir/gpu-vm-bootstrap ]] || lab_die "no $bin_dir/gpu-vm-bootstrap"

mkdir -p /var/lib/gvb-lab
chmod 0755 /var/lib/gvb-lab
work=$(mktemp -d /var/lib/gvb-lab/e2e-headline.XXXXXX)
chmod 0755 "$work"
host=$work/host
mkdir -p "$work/mirror" "$work/bin"
# Both binaries under their own names on PATH, so the commands below read exactly as typed.
ln -s "$vmctl_bin" "$work/bin/vmctl"
ln -s "$bin_dir/gpu-vm-bootstrap" "$work/bin/gpu-vm-bootstrap"
export PATH=$work/bin:$PATH
export GVB_HOST_ROOT=$host VMCTL_HOST_ROOT=$host
export VMCTL_BRIDGE=$GVB_LAB_BRIDGE VMCTL_DOMAIN_TYPE=qemu VMCTL_CPU_MODE=host-model
export VMCTL_TALOS_FACTORY_URL=http://127.0.0.1:$port VMCTL_GITHUB_API_URL=http://127.0.0.1:$port
# Lab addresses below .140 belong to other tests (tests/lab/README.md).
export VMCTL_RESERVED_IPS=198.18.0.1-198.18.0.139

mirror() { GVB_LAB_MIRROR_NETNS=$GVB_LAB_NETNS "$REPO/tests/lab/http-mirror.sh" "$@"; }
hold_pid=
on_exit() {
    local rc=$?
    mirror stop "$work/mirror" "$port" || true
    lab_virsh undefine "$vm1" >/dev/null 2>&1 || true
    # Closing the last connection drops the test driver's state (talos-1 with it).
    [[ -n $hold_pid ]] && kill "$hold_pid" 2>/dev/null
    if ((rc != 0)); then
        echo "---- FAILED (exit $rc) ----" >&2
        [[ -f $GVB_LAB_RUN/http-mirror-$port.log ]] && tail -n 20 "$GVB_LAB_RUN/http-mirror-$port.log" >&2
    fi
    if [[ ${GVB_LAB_KEEP:-0} == 1 ]]; then
        lab_log "GVB_LAB_KEEP=1: kept $work"
    else
        rm -rf "$work"
    fi
    lab_log "$(basename "$0"): $( ((rc == 0)) && echo PASSED || echo FAILED) in $(lab_elapsed "$E2E_T0" "$(lab_now)") s"
}
trap on_exit EXIT

# --- the fixture host and the stand-ins -----------------------------------------------------------------
setup() {
    "$bin_dir/examples/fixture-tree" amd-b550m-gt710-rtx2070s "$host" dhcp || return 1
    # The fixture's /sys knows the live lab bridge (vmctl checks the bridge exists before it scans it).
    mkdir -p "$host/sys/class/net/$GVB_LAB_BRIDGE/bridge" || return 1
    # libvirtd keeps the test driver's state while a connection is open: a virsh reading a pipe holds one.
    local fifo=$work/hold
    mkfifo "$fifo" || return 1
    virsh -c "$test_uri" <"$fifo" >/dev/null 2>&1 &
    hold_pid=$!
    exec {hold_fd}>"$fifo"
    # The holder defines a marker; another connection seeing it proves the state outlives connections.
    echo "<domain type='test'><name>gvb-hold</name><memory>65536</memory><os><type>hvm</type></os></domain>" >"$work/hold.xml"
    echo "define $work/hold.xml" >&"$hold_fd"
    lab_wait_for 30 "the test driver held open" virsh -q -c "$test_uri" dominfo gvb-hold || return 1
    local m=$work/mirror id
    mkdir -p "$m/repos/siderolabs/talos" || return 1
    echo "[{\"tag_name\": \"$version\", \"draft\": false, \"prerelease\": false}]" >"$m/repos/siderolabs/talos/releases"
    # The schematic of a Turing GPU VM: the open NVIDIA modules, the toolkit and the guest agent.
    id=$(vmctl talos schematic --nvidia production --driver open --extension qemu-guest-agent --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') || return 1
    mkdir -p "$m/image/$id/$version" || return 1
    qemu-img create -q -f qcow2 "$m/image/$id/$version/nocloud-amd64.qcow2" 256M || return 1
    echo "$id" >"$work/schematic-id"
    mirror start "$m" "$port" >/dev/null
}
e2e_step "fixture host, test driver held, stand-in factory on :$port" setup

# --- 1. gpu-vm-bootstrap --gpu-mode passthrough ---------------------------------------------------------
bootstrap() {
    # At a terminal the plan is shown and confirmed; `script` gives the command a pty and types "y".
    printf 'y\n' | script -qec 'gpu-vm-bootstrap --gpu-mode passthrough' /dev/null >"$work/bootstrap.out" 2>&1 ||
        { cat "$work/bootstrap.out"; return 1; }
    grep -q 'applied: ' "$work/bootstrap.out" || { cat "$work/bootstrap.out"; return 1; }
    # vfio-pci reserves the RTX 2070 SUPER (all four functions), never the boot VGA GT 710.
    grep -q '^options vfio-pci ids=10de:1e84,10de:10f8,10de:1ad8,10de:1ad9$' "$host/etc/modprobe.d/vfio.conf" ||
        { cat "$host/etc/modprobe.d/vfio.conf"; return 1; }
    grep -q 'iommu=pt' "$host/etc/default/grub" || return 1
    [[ $(stat -c %a "$host/etc/netplan/60-gpu-vm-bootstrap-bridge.yaml") == 600 ]] || return 1
    [[ -f $host/etc/vmctl/config.toml ]] || return 1
}
e2e_step "gpu-vm-bootstrap --gpu-mode passthrough (pty, answered y)" bootstrap

# --- 2. vmctl create talos --gpu ------------------------------------------------------------------------
create_talos() {
    VMCTL_CONNECT=$test_uri lab_in_ns vmctl create talos --gpu >"$work/create.out" 2>"$work/create.err" ||
        { cat "$work/create.out" "$work/create.err"; return 1; }
    cat "$work/create.out"
    grep -q 'talos-1' "$work/create.out" || { echo "the VM is not named talos-1" >&2; return 1; }
    [[ $(virsh -q -c "$test_uri" domstate talos-1) == running ]] || return 1
    virsh -q -c "$test_uri" dumpxml talos-1 >"$work/talos-1.xml" || return 1
    python3 - "$work/talos-1.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
d = ET.parse(sys.argv[1]).getroot()
buses = sorted(a.get("bus") for a in d.findall("./devices/hostdev/source/address"))
# The RTX 2070 SUPER is bus 0x2b (four functions); the boot VGA GT 710 (bus 0x04) is not passed.
assert buses == ["0x2b"] * 4, buses
EOF
    [[ $(stat -c %a "$host/var/lib/vmctl/talos/talos-1/talosconfig") == 600 ]] ||
        { echo "no talosconfig (0600) under the host root" >&2; return 1; }
    # The address came from the lab bridge's scan, outside the reserved range.
    # (The summary on stderr names it: the next steps on stdout bootstrap through the Talos API.)
    cat "$work/create.out" "$work/create.err" | grep -Eo '198\.18\.0\.[0-9]+' | head -n1 >"$work/ip"
    local last
    last=$(cut -d. -f4 <"$work/ip")
    [[ -n $last ]] && ((last >= 140)) || { echo "--ip auto picked '$(cat "$work/ip")'" >&2; return 1; }
}
e2e_step "vmctl create talos --gpu" create_talos

# --- 3. vmctl gpu detach vm1 ----------------------------------------------------------------------------
detach() {
    echo "<domain type='qemu'><name>$vm1</name><memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os><devices/></domain>" >"$work/vm1.xml"
    lab_virsh define "$work/vm1.xml" >/dev/null || return 1
    vmctl gpu attach "$vm1" --gpu 2b:00.0 >/dev/null || return 1
    [[ $(lab_virsh dumpxml --inactive "$vm1" | grep -c '<hostdev ') == 4 ]] || return 1
    vmctl gpu detach vm1 || return 1
    ! lab_virsh dumpxml --inactive "$vm1" | grep '<hostdev ' >/dev/null || { echo "hostdevs left in $vm1" >&2; return 1; }
}
e2e_step "vmctl gpu detach vm1" detach

# --- 4. vmctl ip check ----------------------------------------------------------------------------------
ip_check() {
    lab_in_ns vmctl ip check >"$work/ip-check.out" || { cat "$work/ip-check.out"; return 1; }
    cat "$work/ip-check.out"
    # The lab host's own address is in use; the scan covered the lab subnet.
    grep -q '^198.18.0.1 .*(this host)' "$work/ip-check.out" || return 1
}
e2e_step "vmctl ip check" ip_check
