#!/usr/bin/env bash
# Issue 4 e2e, the way a real cloud image boots: the lab's bootable disk (GPT, ESP with GRUB, ext4 root)
# under vmctl's default UEFI firmware, no --kernel, a 4G disk that cloud-init grows into.
# Same steps and checks as 10-ubuntu-vm.sh (create --wait, ssh, list --json, stop, delete, nothing left),
# plus: the guest sees /sys/firmware/efi and a root fs over 3 GiB.
set -euo pipefail
GVB_E2E_VM=e2e5 GVB_E2E_IP=198.18.0.64 GVB_E2E_BOOT=disk exec "$(dirname "${BASH_SOURCE[0]}")/10-ubuntu-vm.sh"
