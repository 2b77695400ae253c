#!/usr/bin/env bash
# vmctl gpu on the lab's real libvirtd with fixture hosts' GPUs (--host-root): the lab has no
# IOMMU, so passthrough is config-only (tests/lab/README.md). Checks: a 4-function Turing lands
# in one guest slot (dumpxml + virt-xml-validate); different GPUs go to different VMs and one VM
# cannot take another's (exit 2, naming it); status shows who holds what; detach removes all.
# HGX: `--gpu all` on the completed 8xH200 host defines 8 GPUs + 4 NVSwitches (12 managed
# hostdevs, virt-xml-validate), one GPU alone is refused (exit 2, the NVLink fabric reason), and
# detach removes the switches with the last GPU.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_gate
lab_up_check() { virsh -c "$GVB_LAB_URI" list --all >/dev/null || lab_die "libvirtd not reachable at $GVB_LAB_URI" "run tests/lab/up.sh"; }
lab_up_check

VMCTL=$(e2e_find_vmctl)
(cd "$REPO" && cargo build -q -p gpu-vm-bootstrap --example fixture-tree) || lab_die "cannot build the fixture-tree example"
MK="${CARGO_TARGET_DIR:-$REPO/target}/debug/examples/fixture-tree"
WORK=$(mktemp -d -t gvb-e2e-gpu-XXXXXX)
A="gvb-e2e-gpu-a-$$" B="gvb-e2e-gpu-b-$$"
cleanup() {
    for d in "$A" "$B"; do virsh -c "$GVB_LAB_URI" undefine "$d" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

"$MK" amd-b550m-gt710-rtx2070s "$WORK/b550" none
"$MK" hgx-h200x8-nvswitch-truncated "$WORK/hgx" none
# Single GPUs of the NVSwitch host to separate VMs: the host runs Shared NVSwitch multitenancy
# (Fabric Manager with FABRIC_MODE=1), as tests/fixtures/hosts/synthetic-hgx-shared-nvswitch.
mkdir -p "$WORK/hgx/usr/share/nvidia/nvswitch" "$WORK/hgx/proc/4242"
echo FABRIC_MODE=1 >"$WORK/hgx/usr/share/nvidia/nvswitch/fabricmanager.cfg"
echo nv-fabricmanage >"$WORK/hgx/proc/4242/comm"
"$MK" hgx-h200x8-nvswitch "$WORK/hgx-full" none
for d in "$A" "$B"; do
    echo "<domain type='qemu'><name>$d</name><memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os><devices/></domain>" >"$WORK/$d.xml"
    virsh -c "$GVB_LAB_URI" define "$WORK/$d.xml" >/dev/null
done
gpu() { local root=$1; shift; "$VMCTL" --connect "$GVB_LAB_URI" --host-root "$root" gpu "$@"; }

turing() {
    gpu "$WORK/b550" attach "$A" --gpu 2b:00.0 >/dev/null
    virsh -c "$GVB_LAB_URI" dumpxml --inactive "$A" >"$WORK/a.xml"
    [[ $(grep -c "<hostdev mode='subsystem' type='pci' managed='yes'>" "$WORK/a.xml") == 4 ]] || { echo "FAIL: not 4 hostdevs"; cat "$WORK/a.xml"; return 1; }
    virt-xml-validate "$WORK/a.xml" domain >/dev/null 2>&1 || { echo "FAIL: virt-xml-validate"; virt-xml-validate "$WORK/a.xml" domain; return 1; }
    gpu "$WORK/b550" detach "$A" >/dev/null
    ! virsh -c "$GVB_LAB_URI" dumpxml --inactive "$A" | grep "<hostdev" >/dev/null || { echo "FAIL: hostdevs left"; return 1; }
}

multi_gpu() {
    gpu "$WORK/hgx" attach "$A" --gpu 0 --gpu 1 >/dev/null
    gpu "$WORK/hgx" attach "$B" --gpu 5d:00.0 >/dev/null
    local rc=0
    gpu "$WORK/hgx" attach "$B" --gpu 1 2>"$WORK/err" || rc=$?
    [[ $rc == 2 ]] || { echo "FAIL: stealing a GPU exited $rc"; return 1; }
    grep -q "already attached to VM \`$A\`" "$WORK/err" || { echo "FAIL: refusal does not name $A"; cat "$WORK/err"; return 1; }
    gpu "$WORK/hgx" status --json >"$WORK/status.json"
    python3 - "$WORK/status.json" "$A" "$B" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
held = {g["bdf"]: [a["vm"] for a in g["attached"]] for g in r["gpus"] if g["attached"]}
want = {"0000:18:00.0": [sys.argv[2]], "0000:2a:00.0": [sys.argv[2]], "0000:5d:00.0": [sys.argv[3]]}
assert held == want, held
PY
    gpu "$WORK/hgx" detach "$A" >/dev/null
    gpu "$WORK/hgx" detach "$B" >/dev/null
}

hgx_full() {
    local rc=0
    gpu "$WORK/hgx-full" attach "$A" --gpu 0 2>"$WORK/err" || rc=$?
    [[ $rc == 2 ]] || { echo "FAIL: one GPU of the HGX host exited $rc"; return 1; }
    grep -q "NVLink/NVSwitch fabric will not work in the guest" "$WORK/err" || { echo "FAIL: no fabric reason"; cat "$WORK/err"; return 1; }
    gpu "$WORK/hgx-full" attach "$A" --gpu all >/dev/null
    virsh -c "$GVB_LAB_URI" dumpxml --inactive "$A" >"$WORK/a.xml"
    [[ $(grep -c "<hostdev mode='subsystem' type='pci' managed='yes'>" "$WORK/a.xml") == 12 ]] || { echo "FAIL: not 12 hostdevs"; cat "$WORK/a.xml"; return 1; }
    grep -q "bus='0x08' slot='0x00' function='0x0'" "$WORK/a.xml" || { echo "FAIL: NVSwitch 08:00.0 missing"; return 1; }
    virt-xml-validate "$WORK/a.xml" domain >/dev/null 2>&1 || { echo "FAIL: virt-xml-validate"; virt-xml-validate "$WORK/a.xml" domain; return 1; }
    gpu "$WORK/hgx-full" detach "$A" >/dev/null
    ! virsh -c "$GVB_LAB_URI" dumpxml --inactive "$A" | grep "<hostdev" >/dev/null || { echo "FAIL: hostdevs left"; return 1; }
}

e2e_step "4-function Turing config attach/detach" turing
e2e_step "different GPUs to different VMs" multi_gpu
e2e_step "HGX full passthrough: 8 GPUs + 4 NVSwitches, partial refused" hgx_full
echo "OK: vmctl gpu config passthrough on $GVB_LAB_URI"
