#!/usr/bin/env bash
# Issue 4, the download path for real: `vmctl create ubuntu --release 24.04` against a local stand-in for
# cloud-images.ubuntu.com (tests/lab/http-mirror.sh, `noble/current/<file>` + SHA256SUMS, the lab image
# playing the cloud image). Checks:
#   1. a good mirror: the image is downloaded, verified against SHA256SUMS, stored content-addressed in the
#      cache, the VM's overlay is backed by that blob; `vmctl delete` removes the VM but not the cached base;
#   2. a mirror serving a truncated image: create fails (exit 1), and leaves no domain, no VM dir, no blob
#      and no partial download behind;
#   3. a mirror that cuts the first transfer: create fails (exit 1) keeping the partial download, and the
#      next create resumes it with an HTTP Range request and succeeds.
# The domain is defined with --no-start: booting is covered by 10-ubuntu-vm.sh.
#
# Env: VMCTL (binary), GVB_E2E_MIRROR_PORT (default 18780; it and the next two ports are used),
# GVB_LAB_KEEP=1 (keep the scratch dir).
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_gate

port_good=${GVB_E2E_MIRROR_PORT:-18780}
port_bad=$((port_good + 1))
port_cut=$((port_good + 2))
cut_after=$((64 * 1024 * 1024))
# vmctl's release data maps 24.04 to noble; the file name is the one cloud-images.ubuntu.com uses.
release=24.04
codename=noble
file=$codename-server-cloudimg-amd64.img

"$REPO/tests/lab/up.sh"
image=$("$REPO/tests/lab/build-image.sh" | tail -n1)
vmctl_bin=$(e2e_find_vmctl)

mkdir -p /var/lib/gvb-lab
chmod 0755 /var/lib/gvb-lab
work=$(mktemp -d /var/lib/gvb-lab/e2e-mirror.XXXXXX)
chmod 0755 "$work"
mkdir -p "$work/vms" "$work/state" "$work/good" "$work/bad"
: >"$work/config.toml"
export VMCTL_CONNECT=$GVB_LAB_URI
export VMCTL_STORAGE_DIR=$work/vms
export VMCTL_STATE_DIR=$work/state
# No keyring: the check is SHA256SUMS only (the signature path needs Ubuntu's key and a real signature).
export VMCTL_GPG_KEYRING=$work/no-keyring.gpg
ssh-keygen -q -t ed25519 -N '' -C gvb-e2e -f "$work/id_ed25519"

vmctl() { lab_in_ns "$vmctl_bin" --config "$work/config.toml" "$@"; }
mirror() { GVB_LAB_MIRROR_NETNS=$GVB_LAB_NETNS "$REPO/tests/lab/http-mirror.sh" "$@"; }
remove_domain() {
    lab_virsh destroy "$1" >/dev/null 2>&1 || true
    lab_virsh undefine "$1" --nvram >/dev/null 2>&1 || lab_virsh undefine "$1" >/dev/null 2>&1 || true
}

for vm in e2e2 e2e3 e2e4; do
    lab_virsh dominfo "$vm" >/dev/null 2>&1 && { lab_log "removing leftover domain $vm"; remove_domain "$vm"; }
done

on_exit() {
    local rc=$?
    mirror stop "$work/good" "$port_good" || true
    mirror stop "$work/bad" "$port_bad" || true
    mirror stop "$work/good" "$port_cut" || true
    if ((rc != 0)); then
        echo "---- FAILED (exit $rc) ----" >&2
        for log in "$GVB_LAB_RUN"/http-mirror-{"$port_good","$port_bad","$port_cut"}.log; do
            [[ -f $log ]] && { echo "---- $log ----" >&2; tail -n 20 "$log" >&2; }
        done
        find "$work" -maxdepth 4 -ls >&2 || true
    fi
    if [[ ${GVB_LAB_KEEP:-0} == 1 ]]; then
        lab_log "GVB_LAB_KEEP=1: kept $work (domains e2e2/e2e3 if any)"
    else
        remove_domain e2e2
        remove_domain e2e3
        remove_domain e2e4
        rm -rf "$work"
    fi
    lab_log "$(basename "$0"): $( ((rc == 0)) && echo PASSED || echo FAILED) in $(lab_elapsed "$E2E_T0" "$(lab_now)") s"
}
trap on_exit EXIT

create_args() {
    local vm=$1 ip=$2
    echo create ubuntu "$vm" --release "$release" \
        --kernel "$image/vmlinuz" --initrd "$image/initrd.img" \
        --bridge "$GVB_LAB_BRIDGE" --ip "$ip/24" --gateway 198.18.0.1 \
        --domain-type qemu --cpu-mode host-model --firmware bios --memory 1024 \
        --ssh-key "$work/id_ed25519.pub" --user e2e --no-start
}

# --- mirrors ------------------------------------------------------------------------------------------
make_mirrors() {
    # The good mirror serves the lab image; a hard link costs nothing when the cache is on the same fs.
    ln "$image/base.qcow2" "$work/$file" 2>/dev/null || cp "$image/base.qcow2" "$work/$file"
    "$REPO/tests/lab/http-mirror.sh" ubuntu-layout "$work/good" "$codename" "$work/$file"
    rm -f "$work/$file"
    # The bad mirror lists the real checksum but serves only the first 8 MiB: a truncated download.
    mkdir -p "$work/bad/$codename/current"
    cp "$work/good/$codename/current/SHA256SUMS" "$work/bad/$codename/current/"
    head -c 8M "$work/good/$codename/current/$file" >"$work/bad/$codename/current/$file"
    mirror start "$work/good" "$port_good" >/dev/null
    mirror start "$work/bad" "$port_bad" >/dev/null
    # The same files again, but the first transfer of each is cut after $cut_after bytes.
    GVB_LAB_MIRROR_CUT_AFTER=$cut_after mirror start "$work/good" "$port_cut" >/dev/null
}
e2e_step "mirrors up (good :$port_good, truncated :$port_bad, cut :$port_cut)" make_mirrors
want_sha=$(awk -v f="*$file" '$2 == f { print $1 }' "$work/good/$codename/current/SHA256SUMS")

# --- 1. good mirror -------------------------------------------------------------------------------------
create_good() {
    # shellcheck disable=SC2046 # create_args prints words without spaces inside them
    VMCTL_UBUNTU_CLOUD_URL=http://127.0.0.1:$port_good VMCTL_IMAGE_CACHE=$work/images \
        vmctl $(create_args e2e2 198.18.0.61)
}
e2e_step "vmctl create ubuntu e2e2 --release $release (download + verify)" create_good

cached_and_backing() {
    local blob=$work/images/sha256/$want_sha backing
    [[ -f $blob ]] || { echo "no blob $blob in the image cache: $(find "$work/images" -type f)" >&2; return 1; }
    [[ $(sha256sum <"$blob" | cut -d' ' -f1) == "$want_sha" ]] || { echo "blob content does not match its name" >&2; return 1; }
    backing=$(qemu-img info --output=json -U "$work/vms/e2e2/disk.qcow2" |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("backing-filename",""))')
    [[ $backing == "$blob" ]] || { echo "overlay backed by '$backing', expected $blob" >&2; return 1; }
    echo "cached $blob; overlay backed by it"
}
e2e_step "image cached as sha256/<hash>, overlay backed by it" cached_and_backing

e2e_step "vmctl delete e2e2 --yes" vmctl delete e2e2 --yes
base_kept() {
    ! lab_virsh dominfo e2e2 >/dev/null 2>&1 || { echo "domain e2e2 still defined" >&2; return 1; }
    [[ ! -e $work/vms/e2e2 ]] || { echo "$work/vms/e2e2 still exists" >&2; return 1; }
    [[ -f $work/images/sha256/$want_sha ]] || { echo "delete removed the cached base image" >&2; return 1; }
}
e2e_step "VM gone, cached base image kept" base_kept

# --- 2. truncated download ------------------------------------------------------------------------------
create_bad() {
    local rc=0 out
    # shellcheck disable=SC2046
    out=$(VMCTL_UBUNTU_CLOUD_URL=http://127.0.0.1:$port_bad VMCTL_IMAGE_CACHE=$work/images-bad \
        vmctl $(create_args e2e3 198.18.0.62) 2>&1) || rc=$?
    echo "$out"
    ((rc == 1)) || { echo "expected exit 1 for a truncated image, got $rc" >&2; return 1; }
    grep -qi 'sha256\|checksum\|mismatch' <<<"$out" || { echo "the error does not mention the checksum" >&2; return 1; }
}
e2e_step "truncated image: create fails with a checksum error" create_bad

nothing_left_bad() {
    local left
    ! lab_virsh dominfo e2e3 >/dev/null 2>&1 || { echo "domain e2e3 was defined" >&2; return 1; }
    [[ ! -e $work/vms/e2e3 ]] || { echo "$work/vms/e2e3 was left behind" >&2; return 1; }
    left=$(find "$work/images-bad" -type f \( -path '*/sha256/*' -o -path '*/partial/*' \) 2>/dev/null)
    [[ -z $left ]] || { echo "left in the cache: $left" >&2; return 1; }
}
e2e_step "nothing left: no domain, no VM dir, no blob, no partial" nothing_left_bad

# --- 3. interrupted download, then resumed --------------------------------------------------------------
create_cut() {
    # shellcheck disable=SC2046
    VMCTL_UBUNTU_CLOUD_URL=http://127.0.0.1:$port_cut VMCTL_IMAGE_CACHE=$work/images-resume \
        vmctl $(create_args e2e4 198.18.0.63)
}
first_attempt_cut() {
    local rc=0 out partial
    out=$(create_cut 2>&1) || rc=$?
    echo "$out"
    ((rc == 1)) || { echo "expected exit 1 for an interrupted transfer, got $rc" >&2; return 1; }
    # Not asserted (yet): the message should tell the user that running again resumes.
    grep -qi 'resume' <<<"$out" || lab_log "NOTE: the interrupted-download error does not say that a rerun resumes"
    ! lab_virsh dominfo e2e4 >/dev/null 2>&1 || { echo "domain e2e4 was defined" >&2; return 1; }
    [[ ! -e $work/vms/e2e4 ]] || { echo "$work/vms/e2e4 was left behind" >&2; return 1; }
    partial=$(find "$work/images-resume" -path '*/partial/*' -type f -size +0)
    [[ -n $partial ]] || { echo "no partial download kept for the resume" >&2; return 1; }
    echo "kept $partial ($(stat -c %s "$partial") bytes)"
}
e2e_step "cut transfer: create fails, partial download kept" first_attempt_cut

resumed() {
    create_cut || return 1
    grep -q "\"GET /$codename/current/$file HTTP/1.1\" 206 - range=bytes=[1-9][0-9]*-" \
        "$GVB_LAB_RUN/http-mirror-$port_cut.log" || { echo "no Range request in the mirror log" >&2; return 1; }
    [[ -f $work/images-resume/sha256/$want_sha ]] || { echo "resumed blob missing or misnamed" >&2; return 1; }
    [[ -z $(find "$work/images-resume" -path '*/partial/*' -type f) ]] || { echo "partial left after success" >&2; return 1; }
    grep "range=bytes" "$GVB_LAB_RUN/http-mirror-$port_cut.log"
}
e2e_step "second create resumes with Range and succeeds" resumed
e2e_step "vmctl delete e2e4 --yes" vmctl delete e2e4 --yes
