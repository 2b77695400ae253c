#!/usr/bin/env bash
# Builds the Debian packages gpu-vm-bootstrap_<version>_<arch>.deb and vmctl_<version>_<arch>.deb
# into $OUT (default dist/) from a staging tree per package, with `dpkg-deb --build
# --root-owner-group` (no cargo-deb, no debhelper). Completions and man pages come from the
# binaries themselves (`completions <shell>`, hidden `__man DIR`), so they match the clap
# definitions byte for byte.
#
# Environment:
#   OUT=DIR        where the .debs go (default: dist/)
#   PROFILE=NAME   cargo profile to build (default: release; `dev` is faster for checks)
#   BIN_DIR=DIR    take gpu-vm-bootstrap and vmctl from DIR instead of building (release.sh)
#   CARGO_TARGET_DIR is honoured.
# Needs: dpkg-deb, gzip; dpkg-shlibdeps (dpkg-dev) for the shared-library dependencies.
set -euo pipefail
umask 022

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/dist}
PROFILE=${PROFILE:-release}
CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PACKAGES=(gpu-vm-bootstrap vmctl)
MAINTAINER=${DEB_MAINTAINER:-gpu-vm-bootstrap maintainers <maintainers@gpu-vm-bootstrap.invalid>}
HOMEPAGE=https://github.com/gpu-vm-bootstrap/gpu-vm-bootstrap

die() {
  echo "error: $1" >&2
  shift
  for h in "$@"; do echo "help: $h" >&2; done
  exit 1
}

command -v dpkg-deb >/dev/null || die "dpkg-deb not found" "apt-get install dpkg-dev (or run scripts/install-deps.sh)"

# The workspace version ([workspace.package] in Cargo.toml) is the package version; the
# changelog must agree, or the package would describe a release it is not.
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$VERSION" ] || die "no version in [workspace.package] of Cargo.toml"
CHANGELOG_VERSION=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' packaging/debian/changelog)
[ "$VERSION" = "$CHANGELOG_VERSION" ] || die \
  "packaging/debian/changelog is at $CHANGELOG_VERSION but Cargo.toml at $VERSION" \
  "add a changelog entry for $VERSION at the top of packaging/debian/changelog"
ARCH=$(dpkg --print-architecture)
# Reproducible timestamps: the last commit's time, or the changelog's (a source tarball).
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null ||
    date -d "$(sed -n 's/^ -- .*>  //p' packaging/debian/changelog | head -1)" +%s)
fi
export SOURCE_DATE_EPOCH

if [ -z "${BIN_DIR:-}" ]; then
  "$CARGO" build --profile "$PROFILE" -p gpu-vm-bootstrap -p vmctl-cli --bins
  case $PROFILE in dev | test) BIN_DIR=$TARGET_DIR/debug ;; *) BIN_DIR=$TARGET_DIR/$PROFILE ;; esac
fi
for p in "${PACKAGES[@]}"; do
  [ -x "$BIN_DIR/$p" ] || die "$BIN_DIR/$p is missing" "build it first, or unset BIN_DIR"
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

# Shared-library dependencies of a binary, as dpkg-shlibdeps computes them from the shlibs/symbols
# files of the installed libraries (it wants a debian/control in the current directory).
shlibs_depends() {
  local bin=$1 dir=$WORK/shlibdeps
  if ! command -v dpkg-shlibdeps >/dev/null; then
    echo "warning: dpkg-shlibdeps not found; declaring libc6 and libgcc-s1 only" >&2
    echo "libc6, libgcc-s1"
    return
  fi
  mkdir -p "$dir/debian"
  printf 'Source: gpu-vm-bootstrap\n\nPackage: x\nArchitecture: any\n' >"$dir/debian/control"
  (cd "$dir" && dpkg-shlibdeps -O -e"$bin" 2>/dev/null) | sed -n 's/^shlibs:Depends=//p'
}

# The DEP-5 copyright file: our header, then the MIT text as the License paragraph.
copyright() {
  cat packaging/debian/copyright.in
  echo "License: MIT"
  sed -e 's/^$/./' -e 's/^/ /' LICENSE
}

# Files of a package: binary, completions, man pages, docs. $1 = package, $2 = staging root.
stage_common() {
  local pkg=$1 st=$2 bin=$2/usr/bin/$1
  install -D -m 0755 "$BIN_DIR/$pkg" "$bin"
  # The release profile strips already; a dev build carries debug info we do not ship.
  strip --strip-unneeded "$bin" 2>/dev/null || true
  install -d -m 0755 "$st/usr/share/bash-completion/completions" \
    "$st/usr/share/zsh/vendor-completions" "$st/usr/share/fish/vendor_completions.d" \
    "$st/usr/share/man/man1" "$st/usr/share/doc/$pkg"
  "$bin" completions bash >"$st/usr/share/bash-completion/completions/$pkg"
  "$bin" completions zsh >"$st/usr/share/zsh/vendor-completions/_$pkg"
  "$bin" completions fish >"$st/usr/share/fish/vendor_completions.d/$pkg.fish"
  "$bin" __man "$WORK/man-$pkg" 2>/dev/null
  local page name
  for page in "$WORK/man-$pkg"/*.1; do
    name=$(basename "$page")
    gzip -9n <"$page" >"$st/usr/share/man/man1/$name.gz"
  done
  copyright >"$st/usr/share/doc/$pkg/copyright"
  # A native package's changelog is changelog.gz (Debian Policy 12.7).
  gzip -9n <packaging/debian/changelog >"$st/usr/share/doc/$pkg/changelog.gz"
}

stage_vmctl() {
  local st=$1
  install -D -m 0644 packaging/vmctl/config.toml "$st/etc/vmctl/config.toml"
  # Shipped root:root 0755 (dpkg-deb --root-owner-group); postinst hands them to the libvirt
  # group, mode 2775, unless dpkg-statoverride says otherwise.
  install -d -m 0755 "$st/var/lib/vmctl/vms" "$st/var/lib/vmctl/images"
  # The exporter's unit, disabled: no .wants link here, and the postinst enables nothing.
  install -D -m 0644 packaging/vmctl/vmctl-metrics.service "$st/lib/systemd/system/vmctl-metrics.service"
  install -D -m 0755 packaging/vmctl/postinst "$st/DEBIAN/postinst"
  install -D -m 0755 packaging/vmctl/prerm "$st/DEBIAN/prerm"
  install -D -m 0755 packaging/vmctl/postrm "$st/DEBIAN/postrm"
  echo /etc/vmctl/config.toml >"$st/DEBIAN/conffiles"
}

control() {
  local pkg=$1 st=$2 shlibs depends recommends suggests section summary description
  shlibs=$(shlibs_depends "$st/usr/bin/$pkg")
  case $pkg in
    vmctl)
      # genisoimage writes the NoCloud seed (crates/guest-media/src/seed.rs); gpgv checks
      # SHA256SUMS.gpg; iproute2 reads the bridge's subnets; openssh-client for `vmctl ssh`.
      depends="qemu-system-x86 | qemu-kvm, qemu-utils, ovmf, genisoimage, openssh-client, iproute2, gpgv"
      recommends="libvirt-daemon-system, libvirt-clients, ubuntu-cloudimage-keyring, ubuntu-keyring"
      suggests="gpu-vm-bootstrap"
      section="admin"
      summary="manage GPU VMs on libvirt"
      description=" vmctl creates, lists, starts, stops and deletes VMs on libvirt: Ubuntu
 guests from verified cloud images configured by cloud-init, Talos guests,
 NVIDIA GPU passthrough (VFIO) with safety checks, and agentless IP discovery
 on the host bridge. Settings: /etc/vmctl/config.toml (see vmctl config show)."
      ;;
    gpu-vm-bootstrap)
      # apt-get, systemctl, gpasswd (passwd), ip, ping, curl + gpg (NVIDIA repository keys),
      # update-initramfs; update-grub and netplan are recommended: cloud images have them,
      # and the phases that need them can be skipped.
      depends="apt, systemd, passwd, iproute2, iputils-ping, curl, gpg, initramfs-tools"
      recommends="netplan.io, grub2-common, vmctl, libvirt-clients"
      suggests=""
      section="admin"
      summary="prepare an Ubuntu host with NVIDIA GPUs as a GPU VM host"
      description=" gpu-vm-bootstrap plans, shows as a diff, applies, verifies and rolls back
 the host setup for GPU VMs: the NVIDIA driver or VFIO passthrough, KVM and
 libvirt, IOMMU kernel arguments, a bridge for the VMs, and vmctl."
      ;;
  esac
  {
    echo "Package: $pkg"
    echo "Source: gpu-vm-bootstrap"
    echo "Version: $VERSION"
    echo "Architecture: $ARCH"
    echo "Maintainer: $MAINTAINER"
    echo "Installed-Size: $(du -sk --exclude=DEBIAN "$st" | cut -f1)"
    echo "Depends: ${shlibs:+$shlibs, }$depends"
    [ -n "$recommends" ] && echo "Recommends: $recommends"
    [ -n "$suggests" ] && echo "Suggests: $suggests"
    echo "Section: $section"
    echo "Priority: optional"
    echo "Homepage: $HOMEPAGE"
    echo "Description: $summary"
    echo "$description"
  } >"$st/DEBIAN/control"
}

for pkg in "${PACKAGES[@]}"; do
  st=$WORK/$pkg
  install -d -m 0755 "$st/DEBIAN"
  stage_common "$pkg" "$st"
  [ "$pkg" = vmctl ] && stage_vmctl "$st"
  control "$pkg" "$st"
  # md5sums of everything but the conffiles (dpkg keeps those itself).
  (cd "$st" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -print |
    sed 's|^\./||' | LC_ALL=C sort | xargs -r md5sum) >"$st/DEBIAN/md5sums"
  chmod 0644 "$st/DEBIAN/control" "$st/DEBIAN/md5sums"
  [ -f "$st/DEBIAN/conffiles" ] && chmod 0644 "$st/DEBIAN/conffiles"
  find "$st" -depth -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  deb=$OUT/${pkg}_${VERSION}_${ARCH}.deb
  dpkg-deb --build --root-owner-group -Zxz "$st" "$deb" >/dev/null
  echo "$deb"
done
