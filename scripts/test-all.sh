#!/usr/bin/env bash
# `make test`: every test. With GVB_LAB=1 (root) the lab comes up first, because the Rust lab
# tests (libvirtd, network namespaces) need it, then the end-to-end scripts run, and the lab is
# torn down whatever failed.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
if [ "${GVB_LAB:-0}" = 1 ]; then
  tests/e2e/00-lab-up.sh || { echo "error: the test lab did not come up" >&2; exit 1; }
  trap 'tests/e2e/99-lab-down.sh >/dev/null 2>&1' EXIT
fi
# The lab tests run example binaries (target/debug/examples/*); `cargo test --all-targets`
# builds examples only as test harnesses, so build the plain ones first.
${CARGO:-cargo} build --workspace --bins --examples || exit 1
# Tests that need root, the lab libvirtd, namespaces or extra tools are `#[ignore = "lab: …"]`:
# a plain run lists them as ignored; under GVB_LAB=1 they run, and a missing tool fails them.
lab_tests=()
if [ "${GVB_LAB:-0}" = 1 ]; then lab_tests=(-- --include-ignored); fi
${CARGO:-cargo} test --workspace --all-targets --no-fail-fast "${lab_tests[@]}" || rc=1
if [ "${GVB_LAB:-0}" = 1 ]; then
  scripts/run-all.sh tests/e2e || rc=1
else
  echo "lab and e2e tests skipped: run 'make test' as root (GVB_LAB=1) for libvirtd, namespaces and VMs"
fi
exit $rc
