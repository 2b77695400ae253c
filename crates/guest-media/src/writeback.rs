//! Early writeback for large downloads: `sync_file_range(2)` with `SYNC_FILE_RANGE_WRITE` starts
//! writing finished parts of the file to disk while the download goes on, so the `fsync` that
//! makes the cached blob durable before it is renamed into place does not stall at the end.
//!
//! Still a libc call: neither rustix (1.1) nor nix (0.30) wraps sync_file_range(2).

use std::fs::File;
use std::os::fd::AsRawFd;

/// Starts asynchronous writeback of `len` bytes at `offset`. Best effort: errors are ignored
/// (the final `fsync` still guarantees durability).
#[allow(unsafe_code)]
pub fn start(file: &File, offset: u64, len: u64) {
    // SAFETY: sync_file_range only reads its integer arguments; the fd is valid for the borrow
    // of `file`, and the call does not touch process memory.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}
