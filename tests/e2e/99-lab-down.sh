#!/usr/bin/env bash
# Tear the lab down after the e2e tests (tests/lab/down.sh). The cached image stays for the next run.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_gate

e2e_step "lab down" "$REPO/tests/lab/down.sh"
