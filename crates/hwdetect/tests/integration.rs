//! The integration tests of this crate, linked into one test binary (each module was its own
//! binary before: one binary per crate keeps a test build small and links once).
// Helpers outside #[test] fns panic on a broken setup too.
#![allow(clippy::unwrap_used)]

mod fixtures;
mod fuzz_tree;
