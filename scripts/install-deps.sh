#!/usr/bin/env bash
# Installs the system packages the build, the tests and the test lab need (Debian 12 / Ubuntu 24.04).
set -euo pipefail

PACKAGES=(
  pkg-config libvirt-dev               # build: the virt crate links libvirt
  libvirt-daemon-system libvirt-clients # libvirtd, virsh, virt-xml-validate
  qemu-system-x86 qemu-utils ovmf       # guests (TCG or KVM), qemu-img, UEFI firmware
  netplan.io cloud-init                 # `netplan generate` and `cloud-init schema` validate what we write
  arp-scan iproute2                     # reference scanner for benchmarks; network namespaces
  genisoimage xorriso mmdebstrap        # NoCloud seeds, ISO extraction, the lab guest image
  python3 curl time hyperfine man-db    # local HTTP mirror, benchmarks, man page rendering
  openssh-client openssl gpgv xz-utils  # vmctl ssh, password hashing, SHA256SUMS.gpg checks, raw.xz
  fdisk e2fsprogs dosfstools            # the lab's bootable guest disk
  util-linux liblzma-dev                # setpriv (unprivileged scan tests); liblzma for .raw.xz images
  golang-go golang-gopkg-yaml.v3-dev    # go-yaml oracle: checks Talos schematic YAML byte for byte
  dpkg-dev fakeroot                     # building the .deb packages; dpkg-scanpackages for the lab's apt repo
  gpg                                   # guest_driver_lab: signs its throwaway apt repository
  tmux                                  # top_lab drives `vmctl top` in a real terminal (send-keys, capture-pane)
  systemd-boot mokutil                  # bootctl and kernel-install read the systemd-boot fixture; verify runs mokutil
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

$SUDO apt-get update -qq
if ! $SUDO apt-get install -y -qq "${PACKAGES[@]}"; then
  # Some images carry a newer qemu-utils from backports than the distribution's qemu-system-x86
  # accepts; installing qemu-system-x86 would then fail or remove qemu-utils. Pin both to the
  # distribution's own release and name qemu-utils explicitly.
  . /etc/os-release
  echo "install-deps: retrying with qemu-utils from ${VERSION_CODENAME}" >&2
  pkgs=("${PACKAGES[@]/#qemu-utils/qemu-utils/${VERSION_CODENAME}}")
  $SUDO apt-get install -y -qq --allow-downgrades "${pkgs[@]}"
fi

# Without recommends (they would pull in node exporters, docs and more Python than needed):
# - prometheus: Prometheus and promtool check what `vmctl metrics` exports (metrics_lab);
# - ansible-core, python3-venv: the Ansible collection's tests (tests/e2e/60-ansible-collection.sh;
#   ansible-test sanity builds virtual environments, which need ensurepip from python3-venv).
$SUDO apt-get install -y -qq --no-install-recommends prometheus ansible-core python3-venv

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found" >&2
  echo "help: install Rust (1.88 or newer) with rustup: https://rustup.rs, then re-run 'make setup'" >&2
  exit 1
fi
