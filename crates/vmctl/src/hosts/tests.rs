use super::*;

fn entry(name: &str, ssh: &str) -> HostEntry {
    HostEntry::new(name, ssh)
}

#[test]
fn host_names_are_dns_labels_and_local_is_reserved() {
    for ok in ["gpu2", "a", "lab-guest-1", &"x".repeat(63)] {
        validate_name(ok).unwrap();
    }
    for bad in [
        "",
        "local",
        "-a",
        "Gpu2",
        "a_b",
        "a.b",
        "a b",
        &"x".repeat(64),
    ] {
        let e = validate_name(bad).unwrap_err();
        assert_eq!(e.exit_kind(), ExitKind::Usage, "{bad:?}");
    }
}

#[test]
fn entries_refuse_option_like_or_spaced_destinations_and_relative_keys() {
    entry("a", "admin@gpu2.lan").validate().unwrap();
    entry("a", "198.18.0.9").validate().unwrap();
    for bad in [
        "-oProxyCommand=x",
        "a b",
        "admin@",
        "@host",
        "-u@host",
        "u@-host",
        "u@h;rm",
        "",
    ] {
        let e = entry("a", bad).validate().unwrap_err();
        assert!(
            matches!(e, HostsError::BadField { field: "ssh", .. }),
            "{bad:?}: {e}"
        );
    }
    let mut e = entry("a", "h");
    e.identity = Some("id_rsa".into());
    assert!(matches!(
        e.validate(),
        Err(HostsError::BadField {
            field: "identity",
            ..
        })
    ));
    let mut e = entry("a", "h");
    e.port = Some(0);
    assert!(e.validate().is_err());
    let mut e = entry("a", "h");
    e.vmctl = "--evil".into();
    assert!(e.validate().is_err());
}

#[test]
fn quoted_words_survive_a_real_shell_round_trip() {
    let words = [
        "plain",
        "with space",
        "it's",
        "$(touch /tmp/never)",
        "`id`",
        "a\nnewline",
        "\"double\"",
        "back\\slash",
        "",
        "*",
        "'",
    ];
    // printf prints each argument on its own line, NUL-terminated to keep the newline word.
    let script = format!("printf '%s\\0' {}", words.map(quote).join(" "));
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success());
    let got: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .split_terminator('\0')
        .collect();
    assert_eq!(got, words);
}

#[test]
fn ssh_argv_has_the_options_before_the_destination_and_one_remote_string() {
    let mut e = entry("gpu2", "admin@gpu2.lan");
    e.port = Some(2222);
    e.identity = Some("/root/.ssh/id gpu2".into());
    e.sudo = true;
    e.vmctl = "/usr/local/bin/vmctl".into();
    let remote = e.remote_command(&["--json", "list", "a b"]);
    assert_eq!(
        remote,
        "'sudo' '-n' '--' '/usr/local/bin/vmctl' '--json' 'list' 'a b'"
    );
    assert_eq!(
        e.ssh_argv(7, false, &remote),
        [
            "ssh",
            "-p",
            "2222",
            "-i",
            "/root/.ssh/id gpu2",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=7",
            "-T",
            "--",
            "admin@gpu2.lan",
            remote.as_str(),
        ]
    );
    let plain = entry("b", "h");
    let argv = plain.ssh_argv(5, true, "'vmctl' 'console' 'vm1'");
    assert_eq!(
        argv,
        [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-t",
            "--",
            "h",
            "'vmctl' 'console' 'vm1'"
        ]
    );
}

#[test]
fn uri_names_user_host_port_and_an_escaped_keyfile() {
    let mut e = entry("gpu2", "admin@gpu2.lan");
    assert_eq!(e.uri(), "qemu+ssh://admin@gpu2.lan/system");
    e.port = Some(2222);
    e.identity = Some("/root/.ssh/id gpu&2".into());
    assert_eq!(
        e.uri(),
        "qemu+ssh://admin@gpu2.lan:2222/system?keyfile=/root/.ssh/id%20gpu%262"
    );
}

#[test]
fn bare_version_takes_the_package_version() {
    assert_eq!(
        bare_version("vmctl 0.1.0 (1a2b3c4)\n").as_deref(),
        Some("0.1.0")
    );
    assert_eq!(bare_version("0.2.0\n").as_deref(), Some("0.2.0"));
    assert_eq!(
        bare_version("gpu-vm-bootstrap 0.1.0").as_deref(),
        Some("0.1.0")
    );
    assert_eq!(bare_version("usage: x"), None);
    assert_eq!(bare_version(""), None);
}

const COMMENTED: &str =
    "# vmctl settings\nbridge = \"br1\" # the lab bridge\n\n# remote hosts below\n";

#[test]
fn add_keeps_comments_and_other_keys() {
    let p = Path::new("/c.toml");
    let mut e = entry("gpu2", "admin@gpu2.lan");
    e.port = Some(2222);
    e.sudo = true;
    let text = add_to_text(COMMENTED, p, &e).unwrap();
    assert!(text.starts_with(COMMENTED), "{text}");
    assert!(
        text.contains("# remote hosts below\n\n[hosts.gpu2]"),
        "{text}"
    );
    assert!(
        text.contains("[hosts.gpu2]\nssh = \"admin@gpu2.lan\"\nport = 2222\nsudo = true\n"),
        "{text}"
    );
    assert!(!text.contains("[hosts]\n"), "{text}");
    let text = add_to_text(&text, p, &entry("gpu3", "gpu3")).unwrap();
    assert!(text.contains("[hosts.gpu3]\nssh = \"gpu3\"\n"), "{text}");
    let again = add_to_text(&text, p, &entry("gpu2", "x")).unwrap_err();
    assert!(matches!(again, HostsError::Exists { .. }));
    assert_eq!(again.exit_kind(), ExitKind::Usage);
    // A value that needs escaping is written as TOML, not pasted.
    let mut odd = entry("odd", "h");
    odd.identity = Some("/k/a\"b\\c".into());
    let text = add_to_text("", p, &odd).unwrap();
    let back: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(
        back["hosts"]["odd"]["identity"].as_str(),
        Some("/k/a\"b\\c")
    );
}

#[test]
fn remove_of_the_last_host_drops_the_hosts_table_and_keeps_the_rest() {
    let p = Path::new("/c.toml");
    let one = add_to_text(COMMENTED, p, &entry("gpu2", "gpu2")).unwrap();
    let two = add_to_text(&one, p, &entry("gpu3", "gpu3")).unwrap();
    let back = remove_from_text(&two, p, "gpu3").unwrap();
    assert_eq!(back, one);
    let none = remove_from_text(&back, p, "gpu2").unwrap();
    assert_eq!(none, COMMENTED);
    match remove_from_text(&two, p, "nope").unwrap_err() {
        HostsError::Unknown { known, .. } => assert_eq!(known, ["gpu2", "gpu3"]),
        other => panic!("{other}"),
    }
}

#[test]
fn config_file_edit_keeps_the_mode_and_creates_new_files_0644() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etc/vmctl/config.toml");
    edit_config_file(&path, |t| add_to_text(t, &path, &entry("a", "a"))).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o644);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    edit_config_file(&path, |t| add_to_text(t, &path, &entry("b", "b"))).unwrap();
    assert_eq!(mode(&path), 0o600);
    // A refused edit writes nothing.
    let before = std::fs::read(&path).unwrap();
    edit_config_file(&path, |t| add_to_text(t, &path, &entry("a", "z"))).unwrap_err();
    assert_eq!(std::fs::read(&path).unwrap(), before);
}
