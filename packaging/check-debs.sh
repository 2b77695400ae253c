#!/usr/bin/env bash
# Helpers are called through check(), which shellcheck cannot follow:
# shellcheck disable=SC2317
# CI check of the Debian packages: builds both (packaging/build-debs.sh), inspects them with
# `dpkg-deb -I/-c`, unpacks them into a scratch root with `dpkg-deb -x`, and checks that the
# files are there with the right owner and mode, the md5sums match, `--version` runs from the
# scratch root and names the commit, the bash completions load and complete, the zsh/fish ones
# parse (when those shells are installed), every man page renders with `man -l` without groff
# warnings, the packaged config.toml parses and documents every key `vmctl config show` knows,
# the exporter's systemd unit is shipped, not enabled, and passes `systemd-analyze verify`, and a
# closed stdout pipe is a clean exit.
#
# Environment: DEBS_DIR=DIR checks the .debs already in DIR instead of building; PROFILE and
# BIN_DIR are passed to build-debs.sh (PROFILE=dev builds faster). Exit 0 when every check
# passes, 1 otherwise (every failure is listed).
# Needs: dpkg-deb, man (man-db), python3; zsh and fish are optional.
set -uo pipefail
umask 022

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FAILED=0
pass() { echo "ok   $*"; }
fail() {
  echo "FAIL $*" >&2
  FAILED=1
}
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if out=$("$@" 2>&1); then pass "$what"; else
    fail "$what"
    printf '%s\n' "$out" | sed 's/^/     /' >&2
  fi
}

VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
ARCH=$(dpkg --print-architecture)
if [ -n "${DEBS_DIR:-}" ]; then
  DIST=$DEBS_DIR
else
  DIST=$WORK/dist
  OUT=$DIST packaging/build-debs.sh >/dev/null || {
    echo "error: packaging/build-debs.sh failed" >&2
    exit 1
  }
fi
BOOT_DEB=$DIST/gpu-vm-bootstrap_${VERSION}_${ARCH}.deb
VMCTL_DEB=$DIST/vmctl_${VERSION}_${ARCH}.deb
for d in "$BOOT_DEB" "$VMCTL_DEB"; do
  [ -f "$d" ] || {
    echo "error: $d missing" >&2
    echo "help: run packaging/build-debs.sh (make deb) first, or unset DEBS_DIR" >&2
    exit 1
  }
done

# --- metadata (dpkg-deb -I / -f) --------------------------------------------------------------
field() { dpkg-deb -f "$1" "$2"; }
has_dep() { # has_dep DEB FIELD ALTERNATIVE: the field lists it (as given, version aside)
  field "$1" "$2" | tr ',' '\n' | sed 's/([^)]*)//g; s/  */ /g; s/^ //; s/ $//' | grep -qxF "$3"
}
check "dpkg-deb -I reads both packages" dpkg-deb -I "$BOOT_DEB"
check "vmctl control: Version $VERSION" test "$(field "$VMCTL_DEB" Version)" = "$VERSION"
for dep in libvirt0 "qemu-system-x86 | qemu-kvm" qemu-utils ovmf genisoimage openssh-client libc6; do
  check "vmctl Depends: $dep" has_dep "$VMCTL_DEB" Depends "$dep"
done
check "vmctl Recommends: libvirt-daemon-system" has_dep "$VMCTL_DEB" Recommends libvirt-daemon-system
for dep in iproute2 apt libc6; do
  check "gpu-vm-bootstrap Depends: $dep" has_dep "$BOOT_DEB" Depends "$dep"
done
check "gpu-vm-bootstrap Recommends: netplan.io" has_dep "$BOOT_DEB" Recommends netplan.io
# It installs libvirt, so it must start without it: no libvirt0 (the hypervisor crate without its
# libvirt feature), and its kvm check asks virsh.
check "gpu-vm-bootstrap does not depend on libvirt0" bash -c "! dpkg-deb -f '$BOOT_DEB' Depends | grep -q libvirt"
check "vmctl conffiles: /etc/vmctl/config.toml" \
  bash -c "dpkg-deb --info '$VMCTL_DEB' conffiles | grep -qxF /etc/vmctl/config.toml"
check "maintainer scripts parse (sh -n)" bash -c "sh -n packaging/vmctl/postinst && sh -n packaging/vmctl/prerm && sh -n packaging/vmctl/postrm"

# --- contents (dpkg-deb -c) -------------------------------------------------------------------
listing() { dpkg-deb -c "$1" | awk '{print $1, $2, $6}'; }
expect_entry() { # expect_entry DEB MODE PATH
  # grep reads to the end (no -q): an early exit would SIGPIPE the listing under pipefail.
  listing "$1" | grep -xF -e "$2 root/root ./$3" >/dev/null
}
for pkg in gpu-vm-bootstrap vmctl; do
  deb=$DIST/${pkg}_${VERSION}_${ARCH}.deb
  check "$pkg: every entry root/root" bash -c "! dpkg-deb -c '$deb' | awk '{print \$2}' | grep -vxq root/root"
  for f in "usr/bin/$pkg:-rwxr-xr-x" \
    "usr/share/bash-completion/completions/$pkg:-rw-r--r--" \
    "usr/share/zsh/vendor-completions/_$pkg:-rw-r--r--" \
    "usr/share/fish/vendor_completions.d/$pkg.fish:-rw-r--r--" \
    "usr/share/man/man1/$pkg.1.gz:-rw-r--r--" \
    "usr/share/doc/$pkg/copyright:-rw-r--r--" \
    "usr/share/doc/$pkg/changelog.gz:-rw-r--r--"; do
    check "$pkg contains ${f%%:*} (${f##*:})" expect_entry "$deb" "${f##*:}" "${f%%:*}"
  done
done
check "vmctl contains etc/vmctl/config.toml" expect_entry "$VMCTL_DEB" -rw-r--r-- etc/vmctl/config.toml
for d in var/lib/vmctl/ var/lib/vmctl/vms/ var/lib/vmctl/images/; do
  check "vmctl contains $d" expect_entry "$VMCTL_DEB" drwxr-xr-x "$d"
done
check "vmctl contains lib/systemd/system/vmctl-metrics.service" \
  expect_entry "$VMCTL_DEB" -rw-r--r-- lib/systemd/system/vmctl-metrics.service
# Disabled by default: no enablement link shipped, and no maintainer script enables it.
check "vmctl ships no .wants link (the exporter is disabled by default)" \
  bash -c "! dpkg-deb -c '$VMCTL_DEB' | grep -q '\.wants/'"
check "vmctl's maintainer scripts never enable a unit" \
  bash -c "! sed 's/#.*//' packaging/vmctl/postinst packaging/vmctl/prerm packaging/vmctl/postrm | grep -E 'systemctl +(--[a-z-]+ +)*enable|deb-systemd-helper +enable'"
check "vmctl has man pages for subcommands" bash -c "dpkg-deb -c '$VMCTL_DEB' | grep -q 'man1/vmctl-config-show.1.gz'"

# --- scratch-root install (dpkg-deb -x) -------------------------------------------------------
R=$WORK/root
mkdir -p "$R"
for deb in "$BOOT_DEB" "$VMCTL_DEB"; do
  check "dpkg-deb -x $(basename "$deb")" dpkg-deb -x "$deb" "$R"
  check "md5sums of $(basename "$deb") match the unpacked files" \
    bash -c "cd '$R' && dpkg-deb --info '$deb' md5sums | md5sum -c --quiet"
done
check "vmctl's shared libraries resolve" bash -c "! ldd '$R/usr/bin/vmctl' | grep 'not found'"

version_ok() { # version_ok BIN: "<name> <version> (<commit>[-dirty]|unknown)"
  local v
  v=$("$R/usr/bin/$1" --version) || return 1
  echo "$v"
  [[ $v =~ ^$1\ $VERSION\ \(([0-9a-f]{7,}(-dirty)?|unknown)\)$ ]]
}
check "vmctl --version runs from the scratch root" version_ok vmctl
check "gpu-vm-bootstrap --version runs from the scratch root" version_ok gpu-vm-bootstrap

# --- the exporter's systemd unit ---------------------------------------------------------------
UNIT=$R/lib/systemd/system/vmctl-metrics.service
exec_start_ok() { # ExecStart is `vmctl metrics serve --listen 127.0.0.1:9177` and the binary takes it
  local cmd
  cmd=$(sed -n 's/^ExecStart=//p' "$UNIT")
  [ "$cmd" = "/usr/bin/vmctl metrics serve --listen 127.0.0.1:9177" ] || {
    echo "ExecStart=$cmd"
    return 1
  }
  # shellcheck disable=SC2086 # the command line's words
  "$R"${cmd} --help >/dev/null
}
check "vmctl-metrics.service: ExecStart serves on loopback and parses" exec_start_ok
if command -v systemd-analyze >/dev/null; then
  # The unit as shipped, its binary pointed at the scratch root's (verify wants it to exist);
  # unknown keys are only warnings there, so any output fails.
  unit_verifies() {
    local dir=$WORK/unit out
    mkdir -p "$dir"
    sed "s|/usr/bin/vmctl|$R/usr/bin/vmctl|" "$UNIT" >"$dir/vmctl-metrics.service"
    out=$(systemd-analyze verify --man=no "$dir/vmctl-metrics.service" 2>&1) || {
      echo "$out"
      return 1
    }
    [ -z "$out" ] || {
      echo "$out"
      return 1
    }
  }
  check "systemd-analyze verify vmctl-metrics.service (no warnings)" unit_verifies
else
  echo "skip systemd-analyze verify: systemd-analyze not installed"
fi

# --- completions ------------------------------------------------------------------------------
bash_completes() { # bash_completes BIN PARTIAL EXPECTED
  local f=$R/usr/share/bash-completion/completions/$1
  bash --norc --noprofile -c "
    set -e
    source '$f' 2>'$WORK/complete.err'     # sourcing prints nothing
    [ ! -s '$WORK/complete.err' ]
    complete -p '$1' | grep -q -- '-F'       # registered as a function
    COMP_WORDS=('$1' '$2'); COMP_CWORD=1; COMP_LINE='$1 $2'; COMP_POINT=\${#COMP_LINE}
    fn=\$(complete -p '$1' | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p')
    \$fn '$1' '$2' '$1'
    printf '%s\n' \"\${COMPREPLY[@]}\" | grep -qx '$3'
  "
}
check "bash completion of vmctl loads and completes 'cre' to 'create'" bash_completes vmctl cre create
check "bash completion of gpu-vm-bootstrap loads and completes 'ver' to 'verify'" \
  bash_completes gpu-vm-bootstrap ver verify
if command -v zsh >/dev/null; then
  for p in vmctl gpu-vm-bootstrap; do
    check "zsh completion of $p parses" zsh -n "$R/usr/share/zsh/vendor-completions/_$p"
  done
else
  echo "skip zsh completion check: zsh not installed"
fi
if command -v fish >/dev/null; then
  for p in vmctl gpu-vm-bootstrap; do
    check "fish completion of $p parses" fish --no-execute "$R/usr/share/fish/vendor_completions.d/$p.fish"
  done
else
  echo "skip fish completion check: fish not installed"
fi

# --- man pages --------------------------------------------------------------------------------
renders() { # renders PAGE: NAME section present, no groff/man warnings
  local out err
  err=$WORK/man.err
  out=$(MANPAGER=cat MANWIDTH=100 man --warnings -l "$1" 2>"$err") || return 1
  [ ! -s "$err" ] || {
    cat "$err"
    return 1
  }
  grep -q '^NAME' <<<"$out" && grep -q '^SYNOPSIS' <<<"$out"
}
if command -v man >/dev/null; then
  n=0
  for page in "$R"/usr/share/man/man1/*.1.gz; do
    if ! out=$(renders "$page" 2>&1); then
      fail "man -l $(basename "$page")"
      printf '%s\n' "$out" | sed 's/^/     /' >&2
    fi
    n=$((n + 1))
  done
  pass "man -l renders all $n man pages"
  MANPAGER=cat MANWIDTH=80 man -l "$R/usr/share/man/man1/vmctl.1.gz" 2>/dev/null | head -8
else
  fail "man not found (apt-get install man-db)"
fi

# --- the config file --------------------------------------------------------------------------
CFG=$R/etc/vmctl/config.toml
check "packaged config.toml parses (vmctl --config … config show)" \
  env -u VMCTL_CONNECT "$R/usr/bin/vmctl" --config "$CFG" config show
keys=$(env -i "$R/usr/bin/vmctl" --config "$CFG" config show --json |
  python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["settings"]))') ||
  fail "vmctl config show --json"
for k in $keys; do
  grep -qE "^#? ?$k = " "$CFG" || fail "config.toml does not document key $k"
  grep -qF "\`$k\`" README.md || fail "README.md does not document key $k"
done
pass "config.toml and README.md document every key ($(wc -w <<<"$keys"))"
check "config show --json names each value's source" bash -c \
  "env -i VMCTL_BRIDGE=br9 '$R/usr/bin/vmctl' --config '$CFG' --connect test:///default config show --json |
   python3 -c 'import json,sys; s=json.load(sys.stdin)[\"settings\"]; assert s[\"bridge\"][\"source\"][\"kind\"]==\"env\", s[\"bridge\"]; assert s[\"connect\"][\"source\"][\"kind\"]==\"flag\"; assert s[\"storage_dir\"][\"source\"][\"kind\"]==\"default\"'"

# --- dpkg --root install: maintainer scripts, conffile, purge ---------------------------------
# dpkg installs into an empty scratch database; --force-script-chrootless runs postinst/postrm
# on the host with DPKG_ROOT set (they honour it), so no chroot or distribution tree is needed.
if [ "$(id -u)" = 0 ]; then
  D=$WORK/dpkgroot
  mkdir -p "$D/var/lib/dpkg/info" "$D/var/lib/dpkg/updates" "$D/etc"
  : >"$D/var/lib/dpkg/status"
  : >"$D/var/lib/dpkg/available"
  printf 'root:x:0:\nlibvirt:x:4242:\n' >"$D/etc/group"
  dpk() { dpkg --root="$D" --force-script-chrootless --force-depends "$@"; }
  check "dpkg --root installs both packages (dependencies forced)" dpk -i "$BOOT_DEB" "$VMCTL_DEB"
  check "dpkg --root: vmctl is installed" \
    bash -c "dpkg --root='$D' -s vmctl | grep -qx 'Status: install ok installed'"
  check "after install the exporter's unit is not enabled" bash -c \
    "[ -f '$D/lib/systemd/system/vmctl-metrics.service' ] && ! ls '$D'/etc/systemd/system/*.wants/vmctl-metrics.service 2>/dev/null"
  check "postinst: /var/lib/vmctl{,/vms,/images} are root:libvirt 2775" bash -c \
    "[ \"\$(stat -c '%u:%g %a' '$D/var/lib/vmctl' '$D/var/lib/vmctl/vms' '$D/var/lib/vmctl/images' | sort -u)\" = '0:4242 2775' ]"
  echo "connect = \"test:///default\" # local edit" >>"$D/etc/vmctl/config.toml"
  check "reinstall keeps the edited conffile" bash -c \
    "dpkg --root='$D' --force-script-chrootless --force-depends --force-confold -i '$VMCTL_DEB' >/dev/null && grep -q 'local edit' '$D/etc/vmctl/config.toml'"
  touch "$D/var/lib/vmctl/vms/disk.qcow2"
  check "dpkg --root --purge both" dpk --purge vmctl gpu-vm-bootstrap
  check "purge removed the binaries, man pages and the conffile" bash -c \
    "[ ! -e '$D/usr/bin/vmctl' ] && [ ! -e '$D/usr/share/man/man1/vmctl.1.gz' ] && [ ! -e '$D/etc/vmctl/config.toml' ]"
  check "purge kept the VM's data" test -f "$D/var/lib/vmctl/vms/disk.qcow2"
elif [ "${GVB_LAB:-0}" = 1 ]; then
  fail "dpkg --root install needs root (GVB_LAB=1 is set): run as root"
else
  echo "skipped: dpkg --root install needs root; set GVB_LAB=1 and run as root"
fi

# --- a closed pipe is a clean exit ------------------------------------------------------------
closed_pipe_ok() { # run with a stdout pipe whose reader is gone: exit 0, no panic
  python3 - "$@" <<'EOF'
import os, subprocess, sys
r, w = os.pipe()
os.close(r)
p = subprocess.run(sys.argv[1:], stdout=w, stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"})
err = p.stderr.decode(errors="replace")
if p.returncode != 0 or "panicked" in err:
    sys.exit(f"exit {p.returncode}: {err}")
EOF
}
check "gpu-vm-bootstrap detect --json into a closed pipe exits 0" \
  closed_pipe_ok "$R/usr/bin/gpu-vm-bootstrap" detect --json
check "vmctl config show into a closed pipe exits 0" \
  closed_pipe_ok "$R/usr/bin/vmctl" --config "$CFG" config show
check "vmctl completions bash into a closed pipe exits 0" \
  closed_pipe_ok "$R/usr/bin/vmctl" completions bash

if [ "$FAILED" = 0 ]; then
  echo "check-debs: all checks passed ($(basename "$BOOT_DEB"), $(basename "$VMCTL_DEB"))"
else
  echo "check-debs: FAILED (see FAIL lines above)" >&2
fi
exit "$FAILED"
