#!/usr/bin/env bash
# Issue 9 end to end: build both .debs from the binaries `make e2e` just built (target/debug, so
# no second, release build), then packaging/check-debs.sh: contents, metadata, a scratch-root
# unpack, `--version`, bash completions, `man -l` of every page, the packaged config.toml, a
# closed pipe, and (as root) a `dpkg --root` install, conffile upgrade and purge.
# Env: CARGO_TARGET_DIR (where the binaries are), GVB_E2E_DEB_PROFILE=release to build release
# packages instead (slow).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [ "${GVB_E2E_DEB_PROFILE:-}" = release ]; then
  exec packaging/check-debs.sh
fi
BIN_DIR=${CARGO_TARGET_DIR:-target}/debug
for b in gpu-vm-bootstrap vmctl; do
  [ -x "$BIN_DIR/$b" ] || cargo build -p "$b" --bins
done
BIN_DIR=$(cd "$BIN_DIR" && pwd) exec packaging/check-debs.sh
