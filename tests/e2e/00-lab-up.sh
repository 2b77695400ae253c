#!/usr/bin/env bash
# Bring the lab up for the e2e tests: build (or reuse) the guest image, then tests/lab/up.sh
# (netns vmlab, bridge labbr0, libvirtd inside the netns). tests/e2e/99-lab-down.sh undoes it.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_gate

e2e_step "guest image (build or cache)" "$REPO/tests/lab/build-image.sh" >/dev/null
e2e_step "lab up" "$REPO/tests/lab/up.sh"
lab_log "image: $("$REPO/tests/lab/build-image.sh" --print-dir)"
