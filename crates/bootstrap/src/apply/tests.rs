//! Unit tests of `apply`.

use super::*;

#[test]
fn journals_from_before_the_hash_and_created_dirs_still_load() {
    // A journal as 684daa3 wrote it, and one from before `created_dirs`/`interrupted`/
    // `created_links` existed.
    for text in [
        r#"{"id":"1","finished":true,"interrupted":false,"rolled_back":false,
                "files":[{"path":"/etc/default/grub","existed":true,"mode":420,"backup":"0",
                          "created_dirs":[]}],
                "commands":[],"created_links":[]}"#,
        r#"{"id":"1","finished":true,"rolled_back":false,
                "files":[{"path":"/etc/default/grub","existed":true,"mode":420,"backup":"0"}],
                "commands":[]}"#,
    ] {
        let j: Journal = serde_json::from_str(text).unwrap();
        assert_eq!(j.files[0].written_sha256, None);
        assert!(j.files[0].created_dirs.is_empty());
    }
}

#[test]
fn rollback_of_an_old_journal_keeps_a_copy_rather_than_guess() {
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(dir.path());
    root.write_atomic("/etc/default/grub", b"ours\n", 0o644)
        .unwrap();
    root.write_atomic(format!("{}/files/0", run_dir("1")), b"original\n", 0o600)
        .unwrap();
    let old = r#"{"id":"1","finished":true,"rolled_back":false,
            "files":[{"path":"/etc/default/grub","existed":true,"mode":420,"backup":"0"}],
            "commands":[]}"#;
    root.write_atomic(
        format!("{}/journal.json", run_dir("1")),
        old.as_bytes(),
        0o600,
    )
    .unwrap();
    let runner = hostio::RecordingRunner::new();
    let report = Applier::new(&root, &runner, &NullLog).rollback().unwrap();
    assert_eq!(
        root.read_to_string("/etc/default/grub").unwrap(),
        "original\n"
    );
    assert_eq!(report.files_kept.len(), 1);
    assert_eq!(
        root.read_to_string(&report.files_kept[0].copy).unwrap(),
        "ours\n"
    );
}
