//! Ctrl-C (SIGINT) and SIGTERM while `create` builds a VM. The first signal only sets a flag;
//! waits check it at their next step and return [`Error::Interrupted`], downloads the same
//! through the image cache's cancellation check ([`crate::media::image_cache`] passes
//! [`requested`]), so the create's rollback removes what it made (a download keeps its partial
//! file, to resume). A second signal exits at once with status 130, as an impatient user
//! expects.
//!
//! Only `create` (and its kin) and `metrics serve` install the handler: the exporter's accept
//! loop checks [`requested`] and returns, so SIGTERM is a clean exit 0. Every other command
//! keeps the default behaviour, so no loop elsewhere has to remember to check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::error::{Error, Result};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn flag() -> &'static Arc<AtomicBool> {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Installs the handlers (idempotent in effect: the flag is shared).
pub fn install() -> std::io::Result<()> {
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal: set means second.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(flag()))?;
        signal_hook::flag::register(sig, Arc::clone(flag()))?;
    }
    Ok(())
}

/// Whether a signal arrived.
pub fn requested() -> bool {
    FLAG.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// `Err(Interrupted)` once a signal arrived: `during` says what was stopped, `next` what the
/// user can do now.
pub fn check(during: impl FnOnce() -> String, next: impl FnOnce() -> String) -> Result<()> {
    if requested() {
        return Err(Error::Interrupted {
            during: during(),
            next: next(),
        });
    }
    Ok(())
}
