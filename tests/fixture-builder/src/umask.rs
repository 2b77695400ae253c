//! Test code run under a chosen umask(2), for the tests that a file is created with exactly its
//! mode whatever the umask of the process that made it. The umask is process-wide: the tests
//! that use this are test binaries of their own, and take turns through one lock here.

use std::os::unix::fs::PermissionsExt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::Path;
use std::sync::Mutex;

use rustix::fs::Mode;

/// Takes away every bit from group and others: a mode given to open(2) or mkdir(2) alone
/// comes out owner-only.
pub const STRICT: u32 = 0o077;
/// Takes away nothing: a mode given as 0666 stays world-writable.
pub const PERMISSIVE: u32 = 0o000;

static TURN: Mutex<()> = Mutex::new(());

/// Runs `f` under `mask`, then restores the umask (also when `f` panics).
pub fn with(mask: u32, f: impl FnOnce()) {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let old = rustix::process::umask(Mode::from_raw_mode(mask));
    let result = catch_unwind(AssertUnwindSafe(f));
    rustix::process::umask(old);
    if let Err(p) = result {
        resume_unwind(p);
    }
}

/// Runs `f` under [`STRICT`], then under [`PERMISSIVE`]; `f` is given the umask.
pub fn each(f: impl Fn(u32)) {
    for mask in [STRICT, PERMISSIVE] {
        with(mask, || f(mask));
    }
}

/// Panics unless `p` (not followed if a symlink) has exactly `want` (permission, setgid and
/// sticky bits), naming the path and the umask it was made under.
pub fn assert_mode(p: &Path, want: u32, mask: u32) {
    let got = std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(
        got,
        want,
        "{} under umask {mask:03o}: {got:o}, want {want:o}",
        p.display()
    );
}
