#!/usr/bin/env bash
# Issue 7 end to end on the lab host itself (no --host-root, unlike the Rust lab test): `vmctl create talos`
# run inside the lab netns against a local stand-in for GitHub's releases API and the Talos Image Factory
# (tests/lab/http-mirror.sh serving a directory: the releases JSON and a tiny fake nocloud qcow2 under
# /image/<schematic id>/<version>/). Checks:
#   1. `--ip auto` on the real bridge picks a free address outside VMCTL_RESERVED_IPS; the domain is defined
#      (--no-start), libvirt's XML passes virt-xml-validate (UEFI, bridge, MAC); the seed is a `cidata`
#      volume whose user-data carries the node's hostname, address and MAC; secrets/talosconfig are 0600;
#   2. the cached image is content-addressed with its sha256 recorded at first download;
#   3. `vmctl start` boots the firmware with the seed and the overlay (the fake image does not boot Talos);
#   4. bad input exits 2 with nothing made: the same cluster again, a version that does not exist;
#   5. `vmctl delete` of the node refuses (it is its cluster's node: `cluster remove-node`), `delete --force`
#      removes the VM's files but keeps the cluster's secrets.
#
# Env: VMCTL (binary), GVB_E2E_TALOS_PORT (default 18790), GVB_LAB_KEEP=1 (keep the scratch dir).
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_gate

port=${GVB_E2E_TALOS_PORT:-18790}
vm=gvb-e2e-talos
version=v1.12.1

"$REPO/tests/lab/up.sh"
vmctl_bin=$(e2e_find_vmctl)

mkdir -p /var/lib/gvb-lab
chmod 0755 /var/lib/gvb-lab
work=$(mktemp -d /var/lib/gvb-lab/e2e-talos.XXXXXX)
chmod 0755 "$work"
mkdir -p "$work/vms" "$work/state" "$work/mirror"
: >"$work/config.toml"
export VMCTL_CONNECT=$GVB_LAB_URI
export VMCTL_STORAGE_DIR=$work/vms
export VMCTL_IMAGE_CACHE=$work/images
export VMCTL_STATE_DIR=$work/state
export VMCTL_BRIDGE=$GVB_LAB_BRIDGE
export VMCTL_DOMAIN_TYPE=qemu VMCTL_CPU_MODE=host-model
export VMCTL_TALOS_FACTORY_URL=http://127.0.0.1:$port VMCTL_GITHUB_API_URL=http://127.0.0.1:$port
# Lab addresses below .90 belong to other tests (tests/lab/README.md).
export VMCTL_RESERVED_IPS=198.18.0.1-198.18.0.89

vmctl() { lab_in_ns "$vmctl_bin" --config "$work/config.toml" "$@"; }
mirror() { GVB_LAB_MIRROR_NETNS=$GVB_LAB_NETNS "$REPO/tests/lab/http-mirror.sh" "$@"; }
remove_domain() {
    lab_virsh destroy "$1" >/dev/null 2>&1 || true
    lab_virsh undefine "$1" --nvram >/dev/null 2>&1 || lab_virsh undefine "$1" >/dev/null 2>&1 || true
}
lab_virsh dominfo "$vm" >/dev/null 2>&1 && { lab_log "removing leftover domain $vm"; remove_domain "$vm"; }

on_exit() {
    local rc=$?
    mirror stop "$work/mirror" "$port" || true
    if ((rc != 0)); then
        echo "---- FAILED (exit $rc) ----" >&2
        [[ -f $GVB_LAB_RUN/http-mirror-$port.log ]] && tail -n 20 "$GVB_LAB_RUN/http-mirror-$port.log" >&2
        find "$work" -maxdepth 5 -ls >&2 || true
    fi
    if [[ ${GVB_LAB_KEEP:-0} == 1 ]]; then
        lab_log "GVB_LAB_KEEP=1: kept $work and domain $vm (if any)"
    else
        remove_domain "$vm"
        rm -rf "$work"
    fi
    lab_log "$(basename "$0"): $( ((rc == 0)) && echo PASSED || echo FAILED) in $(lab_elapsed "$E2E_T0" "$(lab_now)") s"
}
trap on_exit EXIT

# --- the stand-in factory -------------------------------------------------------------------------------
make_mirror() {
    local m=$work/mirror id
    mkdir -p "$m/repos/siderolabs/talos" || return 1
    # The releases list: a draft and a pre-release that "latest" must skip. (The server ignores ?per_page.)
    cat >"$m/repos/siderolabs/talos/releases" <<EOF
[{"tag_name": "v1.14.0", "draft": true, "prerelease": false},
 {"tag_name": "v1.13.0-beta.0", "draft": false, "prerelease": true},
 {"tag_name": "$version", "draft": false, "prerelease": false},
 {"tag_name": "v1.11.5", "draft": false, "prerelease": false}]
EOF
    # The schematic a VM without GPU gets: the guest agent only (the ID is computed offline).
    id=$("$vmctl_bin" talos schematic --extension qemu-guest-agent --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    [[ $id =~ ^[0-9a-f]{64}$ ]] || { echo "no schematic ID from vmctl talos schematic" >&2; return 1; }
    mkdir -p "$m/image/$id/$version" || return 1
    qemu-img create -q -f qcow2 "$m/image/$id/$version/nocloud-amd64.qcow2" 256M || return 1
    echo "$id" >"$work/schematic-id" || return 1
    mirror start "$m" "$port" >/dev/null || return 1
}
e2e_step "stand-in factory + GitHub API on :$port (in netns $GVB_LAB_NETNS)" make_mirror

# --- 1. create --------------------------------------------------------------------------------------------
create() {
    vmctl create talos "$vm" --ip auto --gateway 198.18.0.1 --dns 198.18.0.1 --no-start \
        --cpus 1 --memory 1024 --disk 2G --json >"$work/created.json"
}
e2e_step "vmctl create talos $vm --ip auto --no-start" create

check_created() {
    python3 - "$work/created.json" "$version" "$(cat "$work/schematic-id")" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
assert c["version"] == sys.argv[2], c["version"]
assert c["schematic_id"] == sys.argv[3], c["schematic_id"]
assert c["defined"] and not c["started"] and c["new_cluster"], c
ip = c["ip"].split("/")[0]
assert ip.startswith("198.18.0.") and int(ip.rsplit(".", 1)[1]) >= 90, f"--ip auto picked {ip}"
assert c["endpoint"] == f"https://{ip}:6443", c["endpoint"]
assert c["verification"]["kind"] == "recorded-first", c["verification"]
print(c["name"], c["ip"], c["mac"], c["base_sha256"])
EOF
}
e2e_step "JSON: latest stable version, offline schematic ID, auto address >= .90" check_created
read -r vm_ip vm_mac seed cluster_dir < <(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
print(c["ip"], c["mac"], c["seed"], c["cluster_dir"])' "$work/created.json")

check_xml() {
    lab_virsh dumpxml --inactive "$vm" >"$work/domain.xml" || return 1
    virt-xml-validate "$work/domain.xml" domain || return 1
    grep -q "<mac address='$vm_mac'/>" "$work/domain.xml" || return 1
    grep -q "<source bridge='$GVB_LAB_BRIDGE'/>" "$work/domain.xml" || return 1
    grep -Eq "firmware='efi'|<loader" "$work/domain.xml" || return 1
}
e2e_step "domain XML validates: UEFI, bridge $GVB_LAB_BRIDGE, MAC $vm_mac" check_xml

check_seed() {
    local label
    label=$(isoinfo -d -i "$seed" | sed -n 's/^Volume id: //p')
    [[ $label == cidata ]] || { echo "seed label '$label', want cidata" >&2; return 1; }
    isoinfo -R -i "$seed" -x /user-data >"$work/user-data" || return 1
    grep -q "hostname: $vm" "$work/user-data" || return 1
    grep -q "address: $vm_ip" "$work/user-data" || return 1
    grep -q "$vm_mac" "$work/user-data" || return 1
    grep -q "endpoint: https://${vm_ip%/*}:6443" "$work/user-data" || return 1
    for f in secrets.yaml cluster.json talosconfig; do
        [[ $(stat -c %a "$cluster_dir/$f") == 600 ]] || { echo "$f is not mode 0600" >&2; return 1; }
    done
}
e2e_step "seed: cidata, user-data = the node's config; cluster files 0600" check_seed

# --- 2. cache -------------------------------------------------------------------------------------------
check_cache() {
    local sha
    sha=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["base_sha256"])' <"$work/created.json")
    [[ -f $work/images/sha256/$sha ]] || { echo "no blob sha256/$sha" >&2; return 1; }
    grep -rqs "$sha" "$work/images" --include='*.json' || { echo "no URL record with the sha256" >&2; return 1; }
}
e2e_step "image cached content-addressed, sha256 recorded" check_cache

# --- 3. start -------------------------------------------------------------------------------------------
start_firmware() {
    vmctl start "$vm" || return 1
    [[ $(lab_virsh domstate "$vm") == running ]] || return 1
    lab_virsh destroy "$vm" >/dev/null || return 1
}
e2e_step "vmctl start: qemu takes UEFI + overlay + seed on the bridge" start_firmware

# --- 4. refusals ----------------------------------------------------------------------------------------
expect_2() {
    local what=$1 rc=0 out
    shift
    out=$(vmctl "$@" 2>&1) || rc=$?
    echo "$out"
    ((rc == 2)) || { echo "$what: expected exit 2, got $rc" >&2; return 1; }
    grep -q '^help: ' <<<"$out" || { echo "$what: no help line" >&2; return 1; }
}
refusals() {
    expect_2 "same VM" create talos "$vm" --ip auto --no-start || return 1
    expect_2 "no such version" create talos "$vm-c" --ip 198.18.0.96/24 --no-start --version v1.9.99 || return 1
    expect_2 "pre-release" create talos "$vm-c" --ip 198.18.0.96/24 --no-start --version v1.13.0-beta.0 || return 1
    expect_2 "taken address" create talos "$vm-c" --cluster "$vm" --role worker --ip "$vm_ip" --no-start || return 1
    if lab_virsh dominfo "$vm-c" >/dev/null 2>&1; then echo "domain $vm-c is defined" >&2; return 1; fi
    [[ ! -e $work/vms/$vm-c && ! -e $work/state/talos/$vm-c ]] || return 1
}
e2e_step "bad input exits 2 with help, nothing made" refusals

# --- 5. delete ------------------------------------------------------------------------------------------
delete() {
    local out
    out=$(expect_2 "a cluster node" delete "$vm" --yes) || { echo "$out"; return 1; }
    grep -q "cluster remove-node $vm $vm" <<<"$out" || { echo "$out"; return 1; }
    lab_virsh dominfo "$vm" >/dev/null 2>&1 || { echo "the refused delete removed $vm" >&2; return 1; }
    vmctl delete "$vm" --yes --force || return 1
    if lab_virsh dominfo "$vm" >/dev/null 2>&1; then echo "domain $vm is defined" >&2; return 1; fi
    [[ ! -e $work/vms/$vm ]] || { echo "$work/vms/$vm left behind" >&2; return 1; }
    [[ -f $cluster_dir/secrets.yaml ]] || { echo "delete removed the cluster's secrets" >&2; return 1; }
}
e2e_step "vmctl delete: refused for a cluster node; --force: VM files gone, cluster secrets kept" delete

clash() {
    local out
    out=$(expect_2 "cluster clash" create talos "$vm" --ip 198.18.0.95/24 --no-start) || { echo "$out"; return 1; }
    grep -q "Talos cluster \"$vm\" already exists" <<<"$out" || { echo "$out"; return 1; }
    grep -q "help: to add this VM to it, pass \`--cluster $vm\`" <<<"$out" || return 1
    if lab_virsh dominfo "$vm" >/dev/null 2>&1; then echo "domain $vm is defined" >&2; return 1; fi
}
e2e_step "a new VM named like the existing cluster: refused (exit 2)" clash
