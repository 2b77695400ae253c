//! Every `--help` of the binary, as a snapshot, and the common footer (the walk and the tests are
//! shared: clikit/testing/help_walk.rs). After a deliberate change to the CLI, regenerate with
//! `INSTA_UPDATE=always cargo test -p vmctl-cli --test integration help_snapshots` and review the diff.

#[path = "../../clikit/testing/help_walk.rs"]
pub(crate) mod help_walk;

help_walk::help_tests!("vmctl");
