#!/usr/bin/env bash
# Crash-safety run: SIGKILL `gpu-vm-bootstrap apply --host-root` at random points, TRIALS times
# (default 100; the unit suite runs 50). Every planned file must be its old or its new version
# after each kill, and a re-run must converge (crates/bootstrap/tests/crash.rs).
# Prints how many kills landed mid-apply and how many left a partial state.
# Env: TRIALS, SEED (replay a failing run), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/bench/lib.sh
. "$(pwd)/scripts/bench/lib.sh"

export GVB_CRASH_TRIALS="${TRIALS:-100}"
[ -n "${SEED:-}" ] && export GVB_CRASH_SEED="$SEED"
start="$(date +%s)"
out="$(cargo test --quiet -p gpu-vm-bootstrap --test integration crash:: -- --nocapture 2>&1)" || {
    echo "$out"
    echo "FAIL: crash test"
    bench_result "SIGKILL during apply, $GVB_CRASH_TRIALS trials" "partial state left" "-" "every file old or new" FAIL
    exit 1
}
grep -E "crash test:|full apply|killed mid-apply" <<<"$out"
printf '%-48s %10s %10s\n' "crash test" "measured" "target"
printf '%-48s %8s s %10s\n' "$GVB_CRASH_TRIALS SIGKILL trials, all files old-or-new" "$(( $(date +%s) - start ))" "pass"
bench_result "SIGKILL during apply, $GVB_CRASH_TRIALS trials" "all old or new, re-run converges" "-" "every file old or new" pass
