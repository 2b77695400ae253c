//! Build script: puts the git commit into `--version` as `GVB_BUILD_VERSION`, e.g.
//! `0.1.0 (1a2b3c4)`, `0.1.0 (1a2b3c4-dirty)`, or `0.1.0 (unknown)` outside a git checkout.
//! The body is shared with the other binary crate: `crates/clikit/build_commit.rs`.

include!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../clikit/build_commit.rs"
));
