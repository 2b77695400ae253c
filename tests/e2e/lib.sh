# shellcheck shell=bash
# Shared by the tests/e2e/NN-*.sh scripts: the GVB_LAB gate, step timing, locating vmctl.
# Source it; don't run it.

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_DIR/../.." && pwd)
# shellcheck source=tests/lab/lib.sh
. "$REPO/tests/lab/lib.sh"

# Lab tests run only with GVB_LAB=1 (CI sets it); there they must fail loudly when something is missing.
e2e_gate() {
    if [[ ${GVB_LAB:-} != 1 ]]; then
        echo "skipped: set GVB_LAB=1 ($(basename "$0") needs root, libvirtd and network namespaces)"
        exit 0
    fi
    lab_require_root
}

# e2e_step NAME COMMAND...: run, print its wall time; a failure names the step.
E2E_T0=$(lab_now)
e2e_step() {
    local name=$1 t rc=0
    shift
    t=$(lab_now)
    printf '==> %s\n' "$name" >&2
    "$@" || rc=$?
    if ((rc != 0)); then
        printf '<== FAILED: %s (exit %d after %s s)\n' "$name" "$rc" "$(lab_elapsed "$t" "$(lab_now)")" >&2
        return "$rc"
    fi
    printf '<== %-40s %6s s   (total %s s)\n' "$name" "$(lab_elapsed "$t" "$(lab_now)")" "$(lab_elapsed "$E2E_T0" "$(lab_now)")" >&2
}

# The vmctl binary: $VMCTL if set; else `cargo build -p vmctl-cli` (a no-op when fresh, so a stale binary is
# never tested) and ${CARGO_TARGET_DIR:-target}/debug/vmctl; else `vmctl` on PATH (installed package).
e2e_find_vmctl() {
    if [[ -n ${VMCTL:-} ]]; then
        [[ -x $VMCTL ]] || lab_die "VMCTL=$VMCTL is not an executable"
        echo "$VMCTL"
    elif command -v cargo >/dev/null; then
        (cd "$REPO" && cargo build -q -p vmctl-cli --bin vmctl) >&2 ||
            lab_die "cargo build -p vmctl-cli failed" "fix the build, or point VMCTL at a vmctl binary"
        echo "${CARGO_TARGET_DIR:-$REPO/target}/debug/vmctl"
    elif command -v vmctl >/dev/null; then
        command -v vmctl
    else
        lab_die "no vmctl binary and no cargo" "set VMCTL=/path/to/vmctl"
    fi
}
