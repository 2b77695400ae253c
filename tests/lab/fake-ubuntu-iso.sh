#!/usr/bin/env bash
# A tiny fake Ubuntu release ISO for the `--desktop` installer tests (no Ubuntu ISO here): the lab's
# Debian kernel and initrd at the real paths `casper/vmlinuz` and `casper/initrd`, a `.disk/info`, and
# Joliet + Rock Ridge names, laid out like releases.ubuntu.com:
#   OUTDIR/VERSION/ubuntu-VERSION-FLAVOUR-amd64.iso
#   OUTDIR/VERSION/SHA256SUMS            ("<sha256> *<iso name>", the publisher's format)
# Serve OUTDIR with `tests/lab/http-mirror.sh start OUTDIR PORT` and point vmctl's releases URL at it.
# The ISO does not boot by itself (no bootloader): tests boot casper/vmlinuz + casper/initrd directly.
#
# Usage: fake-ubuntu-iso.sh OUTDIR [VERSION (24.04)] [FLAVOUR (desktop)]   prints the ISO path
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lab/lib.sh
. "$here/lib.sh"

[[ $# -ge 1 ]] || lab_die "usage: $0 OUTDIR [VERSION] [FLAVOUR]"
out=$1
version=${2:-24.04}
flavour=${3:-desktop}
[[ $version =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]] || lab_die "version '$version' is not like 24.04 or 24.04.1"
command -v genisoimage >/dev/null || lab_die "genisoimage not found" "apt-get install genisoimage"

image=$("$here/build-image.sh" | tail -n1)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/casper" "$stage/.disk" "$out/$version"
cp "$image/vmlinuz" "$stage/casper/vmlinuz"
cp "$image/initrd.img" "$stage/casper/initrd"
echo "Ubuntu $version LTS \"Fake\" - Release amd64 (gpu-vm-bootstrap test lab)" >"$stage/.disk/info"

iso=ubuntu-$version-$flavour-amd64.iso
genisoimage -quiet -output "$out/$version/$iso" -volid "Ubuntu $version amd64" -joliet -rock "$stage"
(cd "$out/$version" && for f in *.iso; do echo "$(sha256sum <"$f" | cut -d' ' -f1) *$f"; done) >"$out/$version/SHA256SUMS"
lab_log "fake ISO $out/$version/$iso ($(du -h "$out/$version/$iso" | cut -f1)), SHA256SUMS written"
echo "$out/$version/$iso"
