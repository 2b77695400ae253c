//! Every `hostio::file` function that creates gives exactly the mode it was asked for, under a
//! strict (077) and a permissive (000) umask. umask(2) is process-wide, so this is a binary of
//! its own ([`fixture_builder::umask`] makes its tests take turns).
#![allow(clippy::unwrap_used)]

use fixture_builder::umask::{self, assert_mode};
use hostio::file;

#[test]
fn created_files_and_directories_have_exactly_their_mode_under_any_umask() {
    umask::each(|mask| {
        let tmp = tempfile::tempdir().unwrap();
        let p = |n: &str| tmp.path().join(n);
        drop(file::create_new(&p("new"), 0o640).unwrap());
        assert_mode(&p("new"), 0o640, mask);
        drop(file::open_or_create(&p("partial"), 0o644).unwrap());
        assert_mode(&p("partial"), 0o644, mask);
        file::write_new(&p("secret"), b"s", 0o600).unwrap();
        assert_mode(&p("secret"), 0o600, mask);
        file::write_atomic(&p("seal.json"), b"{}", 0o644).unwrap();
        assert_mode(&p("seal.json"), 0o644, mask);
        file::make_dir(&p("vm"), 0o2711).unwrap();
        assert_mode(&p("vm"), 0o2711, mask);
        hostio::create_dir_all_mode(&p("a/b"), 0o755).unwrap();
        assert_mode(&p("a"), 0o755, mask);
        assert_mode(&p("a/b"), 0o755, mask);
    });
}
