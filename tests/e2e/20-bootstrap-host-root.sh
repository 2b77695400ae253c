#!/usr/bin/env bash
# End to end on fixture trees, with the built binary: plan → apply → plan (no file actions) →
# verify → rollback (byte for byte), and a real `netplan generate --root-dir` on the result,
# for a DHCP and a static host. Needs netplan.io. Changes nothing outside its temp dirs.
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --quiet -p gpu-vm-bootstrap --bin gpu-vm-bootstrap --example fixture-tree
BIN="$TARGET_DIR/debug/gpu-vm-bootstrap"
MK="$TARGET_DIR/debug/examples/fixture-tree"
command -v netplan >/dev/null || { echo "FAIL: netplan not installed (apt-get install netplan.io)"; exit 1; }

WORK="$(mktemp -d -t gvb-e2e-bootstrap-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

# Every file under a tree (except the backup store and log), with its mode and checksum.
fingerprint() { (cd "$1" && find . -path ./var -prune -o -type f -printf '%p %m\n' | sort | while read -r f m; do echo "$f $m $(sha256sum "$f" | cut -d' ' -f1)"; done); }

for spec in amd-b550m-gt710-rtx2070s:dhcp intel-z170-gtx960:static; do
    host="${spec%%:*}" net="${spec##*:}"
    tree="$WORK/$host-$net"
    "$MK" "$host" "$tree" "$net"
    before="$(fingerprint "$tree")"

    "$BIN" plan --host-root "$tree" >"$WORK/plan.txt"
    grep -q "== bridge ==" "$WORK/plan.txt" || { echo "FAIL: $host: no bridge phase in plan"; exit 1; }

    "$BIN" apply --yes --host-root "$tree" >/dev/null 2>"$WORK/apply.log"
    grep -q "skipped (host root): update-grub" "$WORK/apply.log" || { echo "FAIL: $host: commands not listed as skipped"; exit 1; }
    [ "$(stat -c %a "$tree/etc/netplan/60-gpu-vm-bootstrap-bridge.yaml")" = 600 ] || { echo "FAIL: $host: bridge file not 0600"; exit 1; }

    files="$("$BIN" plan --json --host-root "$tree" | python3 -c 'import json,sys; print(sum(1 for a in json.load(sys.stdin)["actions"] if "path" in a))')"
    [ "$files" = 0 ] || { echo "FAIL: $host: $files file actions after apply"; exit 1; }

    netplan generate --root-dir "$tree" || { echo "FAIL: $host: netplan generate rejected the bridge"; exit 1; }
    grep -q "Bridge=br0" "$tree"/run/systemd/network/10-netplan-*.network || { echo "FAIL: $host: NIC not in br0"; exit 1; }
    rm -rf "$tree/run"

    "$BIN" verify --host-root "$tree" >"$WORK/verify.txt" || true
    grep -q "✓ \[iommu\]" "$WORK/verify.txt" || grep -q "✗ \[iommu\]" "$WORK/verify.txt" || { echo "FAIL: $host: verify printed no iommu check"; exit 1; }

    "$BIN" rollback --yes --host-root "$tree" >/dev/null 2>&1
    after="$(fingerprint "$tree")"
    [ "$before" = "$after" ] || { echo "FAIL: $host: rollback is not byte for byte"; diff <(echo "$before") <(echo "$after"); exit 1; }
    echo "ok: $host ($net): plan, apply, idempotent re-plan, netplan generate, verify, rollback"
done
