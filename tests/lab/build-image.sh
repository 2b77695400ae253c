#!/usr/bin/env bash
# Build the lab guest: a small cloud-init-enabled Debian bookworm system, as two disks with the same
# root filesystem. Output (in the cache dir printed on the last line):
#   base.qcow2      ext4 labelled "rootfs" on the whole disk (no partition table, no bootloader), 2 GiB
#                   virtual; boot it with libvirt direct kernel boot and the two files below
#   vmlinuz         the guest kernel (linux-image-cloud-amd64)
#   initrd.img      its initramfs
#   bootable.qcow2  a bootable disk like a cloud image: GPT, an EFI system partition with a standalone
#                   GRUB at \EFI\BOOT\BOOTX64.EFI (unsigned: UEFI without Secure Boot), then the same
#                   ext4 "rootfs"; 2 GiB virtual, grows with growpart
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
# The whole script sits in one { } group, so bash has read all of it before running any of it: editing
# the file while a build runs can't derail the build.
{

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
    # Not used at boot (cloud-init renders ifupdown, see the renderer hook): 50-bootstrap-bridge-vm.sh
    # converts a guest to netplan + systemd-networkd, like an Ubuntu host, and needs ping for the
    # bridge watchdog.
    netplan.io iputils-ping
    # Without D-Bus, systemd-logind doesn't run and an ACPI shutdown (virsh shutdown) is ignored.
    dbus
    # cloud-init's resize_rootfs/growpart/locale modules need these, or `cloud-init status` reports errors.
    e2fsprogs cloud-guest-utils locales
    # Only used at build time, inside the chroot, to make bootable.qcow2's EFI system partition.
    grub-efi-amd64-bin dosfstools mtools
    # A second vmctl host (tests/e2e/61-remote-host.sh): libvirtd with the qemu driver (define needs
    # the emulator for the capabilities; TCG only), and the Depends of the vmctl and
    # gpu-vm-bootstrap .debs (packaging/build-debs.sh), so `apt install ./x.deb` needs no network;
    # python3-apt for Ansible's apt module. All disabled at boot (see the libvirt hook below).
    libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils ovmf genisoimage
    openssh-client gpgv gpg curl python3-apt
)

work=$(mktemp -d "$GVB_LAB_CACHE/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
t0=$(lab_now)

# Hooks: fstab by label (the kernel cmdline says root=/dev/vda, fstab must agree); NoCloud only, so
# cloud-init skips probing other datasources; cloud-init renders the guest network for ifupdown only
# (system_info.network.renderers; netplan.io is installed but must not take over at boot);
# en_US.UTF-8 pre-generated AND named in /etc/default/locale,
# else cloud-init's locale module regenerates it (30 s under TCG); no host keys baked in (each guest
# makes its own); no timers that wake apt or fstrim during a test. Docs/man/locale files are dropped
# to shrink the image (faster mkfs and copy).
# libvirt is in the image for one guest only (the second vmctl host of e2e 61, whose cloud-init starts
# it): no other guest may pay for it at boot. Its daemons and sockets are disabled (libvirt-guests
# too: it would pull libvirtd in), and the `default` network loses its autostart link so a started
# libvirtd never makes virbr0. The last command fails the build if anything libvirt is still enabled.
libvirt_units="libvirtd.service libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket libvirtd-tcp.socket
    libvirtd-tls.socket libvirt-guests.service virtlogd.service virtlogd.socket virtlogd-admin.socket
    virtlockd.service virtlockd.socket virtlockd-admin.socket"
# shellcheck disable=SC2016 # "$1" is expanded by mmdebstrap
libvirt_off='chroot "$1" systemctl disable '"$(echo $libvirt_units)"' >/dev/null &&
    rm -f "$1/etc/libvirt/qemu/networks/autostart/default.xml" &&
    ! find "$1/etc/systemd/system" "$1/etc/libvirt/qemu/networks/autostart" -name "*virt*" | grep .'

lab_log "mmdebstrap $suite (${#packages[@]} packages, mirrors: ${mirrors[*]})"
# shellcheck disable=SC2016 # the hooks' "$1" is expanded by mmdebstrap, not here
mmdebstrap --mode=root --variant=apt --quiet \
    --include="$(IFS=,; echo "${packages[*]}")" \
    --customize-hook='echo "LABEL=rootfs / ext4 defaults 0 1" > "$1/etc/fstab"' \
    --customize-hook='echo lab-guest > "$1/etc/hostname"' \
    --customize-hook='printf "datasource_list: [ NoCloud, None ]\n" > "$1/etc/cloud/cloud.cfg.d/90_lab_datasource.cfg"' \
    --customize-hook='printf "system_info:\n  network:\n    renderers: [eni]\n" > "$1/etc/cloud/cloud.cfg.d/91_lab_renderer.cfg"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --customize-hook='echo "en_US.UTF-8 UTF-8" > "$1/etc/locale.gen" && chroot "$1" locale-gen >/dev/null' \
    --customize-hook='echo "LANG=en_US.UTF-8" > "$1/etc/default/locale"' \
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
    --customize-hook="$libvirt_off" \
    --customize-hook='chroot "$1" systemctl disable apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true' \
    "$suite" "$root" "${mirrors[@]}"
t1=$(lab_now)

# The EFI system partition, made with the guest's own tools (no host packages needed): a standalone
# GRUB with its config embedded finds the filesystem by label and boots the kernel through Debian's
# /vmlinuz and /initrd.img symlinks. `search` does not autoload partition or filesystem modules
# ("no such device: rootfs" without the insmods).
cat >"$root/tmp/grub-embed.cfg" <<'GRUB'
set timeout=0
insmod part_gpt
insmod ext2
search --no-floppy --label rootfs --set=root
linux /vmlinuz root=LABEL=rootfs rw console=tty0 console=ttyS0 net.ifnames=0
initrd /initrd.img
boot
GRUB
chroot "$root" grub-mkstandalone --format=x86_64-efi --output=/tmp/BOOTX64.EFI \
    --locales= --fonts= "boot/grub/grub.cfg=/tmp/grub-embed.cfg"
chroot "$root" mkfs.vfat -C -n ESP /tmp/esp.img $((63 * 1024)) >/dev/null
chroot "$root" mmd -i /tmp/esp.img ::/EFI ::/EFI/BOOT
chroot "$root" mcopy -i /tmp/esp.img /tmp/BOOTX64.EFI ::/EFI/BOOT/BOOTX64.EFI
mv "$root/tmp/esp.img" "$work/esp.img"
rm -f "$root/tmp/BOOTX64.EFI" "$root/tmp/grub-embed.cfg"
t_esp=$(lab_now)

lab_log "mkfs.ext4 + qemu-img convert (base.qcow2, bootable.qcow2)"
cp -L "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp -L "$root"/boot/initrd.img-* "$work/initrd.img"
mkfs.ext4 -q -L rootfs -d "$root" "$work/img.raw" 2G >/dev/null
qemu-img convert -O qcow2 "$work/img.raw" "$work/base.qcow2"
rm -f "$work/img.raw"

# bootable.qcow2: GPT with ESP (1 MiB..64 MiB) and root (the rest); the filesystem is written straight
# into the partition's byte range (mke2fs -E offset), so no loop device or mount is needed.
truncate -s 2G "$work/disk.raw"
sfdisk --quiet "$work/disk.raw" <<'GPT'
label: gpt
start=1MiB, size=63MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=ESP
start=64MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=rootfs
GPT
read -r root_start root_sectors < <(sfdisk --json "$work/disk.raw" |
    python3 -c 'import json,sys; p=json.load(sys.stdin)["partitiontable"]["partitions"][1]; print(p["start"], p["size"])')
dd if="$work/esp.img" of="$work/disk.raw" bs=1M seek=1 conv=notrunc status=none
mkfs.ext4 -q -L rootfs -E offset=$((root_start * 512)) -d "$root" "$work/disk.raw" $((root_sectors / 2))k >/dev/null
qemu-img convert -O qcow2 "$work/disk.raw" "$work/bootable.qcow2"
rm -f "$work/disk.raw" "$work/esp.img"
rm -rf "$root"
t2=$(lab_now)

rm -rf "$dir"
mkdir -p "$dir"
mv "$work/base.qcow2" "$work/bootable.qcow2" "$work/vmlinuz" "$work/initrd.img" "$dir/"
chmod 0644 "$dir"/*
{
    echo "suite=$suite"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "packages=${packages[*]}"
} >"$dir/.complete"

lab_log "timings: mmdebstrap $(lab_elapsed "$t0" "$t1") s, ESP $(lab_elapsed "$t1" "$t_esp") s, mkfs+convert $(lab_elapsed "$t_esp" "$t2") s, total $(lab_elapsed "$t0" "$t2") s"
lab_log "image: $dir (base.qcow2 $(du -h "$dir/base.qcow2" | cut -f1), bootable.qcow2 $(du -h "$dir/bootable.qcow2" | cut -f1))"
echo "$dir"
exit 0
}
