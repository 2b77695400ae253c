#!/usr/bin/env bash
# Build the lab guest: a small cloud-init-enabled Debian bookworm image with no bootloader, booted by
# libvirt direct kernel boot. Output (in the cache dir printed on the last line):
#   base.qcow2   ext4 filesystem labelled "rootfs" on the whole disk (no partition table), 2 GiB virtual
#   vmlinuz      the guest kernel (linux-image-cloud-amd64)
#   initrd.img   its initramfs
# The cache lives outside the checkout (GVB_LAB_CACHE, default /var/cache/gvb-lab) and is keyed by a hash
# of this script, so a changed recipe rebuilds and an unchanged one is reused.
#
# Env:
#   GVB_LAB_CACHE    cache root (default /var/cache/gvb-lab)
#   GVB_LAB_SUITE    Debian suite (default bookworm)
#   GVB_LAB_MIRROR   mirror URL or sources file for mmdebstrap (default: this machine's apt sources)
#   GVB_LAB_REBUILD  set to 1 to rebuild even when the cache entry exists
# Usage: build-image.sh [--print-dir]   (--print-dir: only print the cache dir, build nothing)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lab/lib.sh
. "$here/lib.sh"

suite=${GVB_LAB_SUITE:-bookworm}
dir=$(lab_image_dir)

if [[ ${1:-} == --print-dir ]]; then
    echo "$dir"
    exit 0
fi

lab_require_root
for tool in mmdebstrap mkfs.ext4 qemu-img flock; do
    command -v "$tool" >/dev/null || lab_die "$tool not found" "apt-get install mmdebstrap e2fsprogs qemu-utils util-linux"
done

mkdir -p "$GVB_LAB_CACHE"
# One builder at a time: other engineers' tests may ask for the image concurrently.
exec 9>"$GVB_LAB_CACHE/.build.lock"
flock 9

if [[ -f $dir/.complete && ${GVB_LAB_REBUILD:-0} != 1 ]]; then
    lab_log "image cached: $dir"
    echo "$dir"
    exit 0
fi

# Mirrors: use this machine's apt configuration unless told otherwise, so no host name is baked in here.
mirrors=()
if [[ -n ${GVB_LAB_MIRROR:-} ]]; then
    mirrors=("$GVB_LAB_MIRROR")
else
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -s $f ]] && grep -qE '^[[:space:]]*(deb |Types:)' "$f" && mirrors+=("$f")
    done
fi
[[ ${#mirrors[@]} -gt 0 ]] || lab_die "no apt sources found on this machine" "set GVB_LAB_MIRROR=http://your-debian-mirror/debian"

packages=(
    linux-image-cloud-amd64 systemd-sysv udev
    cloud-init openssh-server qemu-guest-agent sudo
    ifupdown netbase iproute2
    # Without D-Bus, systemd-logind doesn't run and an ACPI shutdown (virsh shutdown) is ignored.
    dbus
    # cloud-init's resize_rootfs/growpart/locale modules need these, or `cloud-init status` reports errors.
    e2fsprogs cloud-guest-utils locales
)

work=$(mktemp -d "$GVB_LAB_CACHE/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
t0=$(lab_now)

# Hooks: fstab by label (the kernel cmdline says root=/dev/vda, fstab must agree); NoCloud only, so
# cloud-init skips probing other datasources; en_US.UTF-8 pre-generated AND named in /etc/default/locale,
# else cloud-init's locale module regenerates it (30 s under TCG); no host keys baked in (each guest
# makes its own); no timers that wake apt or fstrim during a test. Docs/man/locale files are dropped
# to shrink the image (faster mkfs and copy).
lab_log "mmdebstrap $suite (${#packages[@]} packages, mirrors: ${mirrors[*]})"
# shellcheck disable=SC2016 # the hooks' "$1" is expanded by mmdebstrap, not here
mmdebstrap --mode=root --variant=apt --quiet \
    --include="$(IFS=,; echo "${packages[*]}")" \
    --customize-hook='echo "LABEL=rootfs / ext4 defaults 0 1" > "$1/etc/fstab"' \
    --customize-hook='echo lab-guest > "$1/etc/hostname"' \
    --customize-hook='printf "datasource_list: [ NoCloud, None ]\n" > "$1/etc/cloud/cloud.cfg.d/90_lab_datasource.cfg"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --customize-hook='echo "en_US.UTF-8 UTF-8" > "$1/etc/locale.gen" && chroot "$1" locale-gen >/dev/null' \
    --customize-hook='echo "LANG=en_US.UTF-8" > "$1/etc/default/locale"' \
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
    --customize-hook='chroot "$1" systemctl disable apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true' \
    "$suite" "$root" "${mirrors[@]}"
t1=$(lab_now)

lab_log "mkfs.ext4 + qemu-img convert"
cp -L "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp -L "$root"/boot/initrd.img-* "$work/initrd.img"
mkfs.ext4 -q -L rootfs -d "$root" "$work/img.raw" 2G >/dev/null
qemu-img convert -O qcow2 "$work/img.raw" "$work/base.qcow2"
rm -f "$work/img.raw"
rm -rf "$root"
t2=$(lab_now)

rm -rf "$dir"
mkdir -p "$dir"
mv "$work/base.qcow2" "$work/vmlinuz" "$work/initrd.img" "$dir/"
chmod 0644 "$dir"/*
{
    echo "suite=$suite"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "packages=${packages[*]}"
} >"$dir/.complete"

lab_log "timings: mmdebstrap $(lab_elapsed "$t0" "$t1") s, mkfs+convert $(lab_elapsed "$t1" "$t2") s, total $(lab_elapsed "$t0" "$t2") s"
lab_log "image: $dir ($(du -h "$dir/base.qcow2" | cut -f1) qcow2)"
echo "$dir"
