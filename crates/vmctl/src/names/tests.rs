//! Names, sizes, MACs, users, password hashes and SSH keys: what is accepted, what is refused
//! and why.

use super::*;

#[test]
fn vm_names_are_host_name_labels() {
    for ok in [
        "e2e1",
        "web-01",
        "1vm",
        "yes",
        "012",
        "0x1f",
        "1e3",
        "A-1",
        &"a".repeat(63),
    ] {
        validate_vm_name(ok).unwrap();
    }
    for bad in [
        "",
        "a/b",
        "..",
        "a..b",
        "my vm",
        "-x",
        "x-",
        "x.",
        "a.b",
        "a_b",
        "1.5",
        "1_0",
        "~",
        ".hidden",
        "x\ty",
        "é",
        "x\u{202e}y",
        &"a".repeat(64),
    ] {
        assert!(validate_vm_name(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn users_follow_debian_rules_and_are_no_system_accounts() {
    let host = system_accounts(
        "root:x:0:0:root:/root:/bin/bash\npostgres:x:114:120::/var/lib/postgresql:/bin/bash\n\
         alice:x:1000:1000::/home/alice:/bin/bash\nbroken line\nnobody:x:65534:65534::/:/x\n",
    );
    assert_eq!(
        host,
        vec![("root".to_string(), 0), ("postgres".to_string(), 114)]
    );
    for ok in ["ubuntu", "alice", "dev_1", "a-b", "x", &"a".repeat(32)] {
        validate_user(ok, &host).unwrap();
    }
    for (bad, why) in [
        ("", "empty"),
        ("Alice", "NAME_REGEX"),
        ("1abc", "NAME_REGEX"),
        ("_apt", "NAME_REGEX"),
        ("a.b", "NAME_REGEX"),
        ("a b", "NAME_REGEX"),
        ("x$", "machine account"),
        (&"a".repeat(33), "32"),
        ("root", "system account"),
        ("daemon", "system account"),
        ("nobody", "system account"),
        ("sudo", "system account"),
        ("systemd-network", "system account"),
        ("systemd-anything", "system account"),
        ("postgres", "uid 114"),
    ] {
        let err = validate_user(bad, &host).unwrap_err().to_string();
        assert!(err.contains(why), "{bad:?}: {err}");
    }
}

#[test]
fn password_hashes_follow_crypt5() {
    let sha512 = "$6$saltsalt$pauPrmdmG4BTE9h2HPmywiw152IFch6BJCEsaY6D.PLTfpV8sqvXwWdyfsgVgozkYH9B80bAip/08R2BPH2xk/";
    let body = &sha512[12..];
    for ok in [
        sha512.to_string(),
        "$5$saltsalt$0rl.MZtoLLPP3X0Rdl8riRnphIcAXJY27/aOAyK2hB5".into(),
        format!("$6$rounds=5000$saltsalt${body}"),
        "$y$j9T$F5Jx5fExrKuJdljLajF2S1$RpxLcDXsMn6ZC0Fo3dZ.VYbP2WvQq8sDjSWpaOlfxR6".into(),
        "$gy$j9T$F5Jx5fExrKuJdljLajF2S1$RpxLcDXsMn6ZC0Fo3dZ.VYbP2WvQq8sDjSWpaOlfxR6".into(),
        "$7$CU..../....SALTSALTSA$RpxLcDXsMn6ZC0Fo3dZ.VYbP2WvQq8sDjSWpaOlfxR6".into(),
        "$2b$12$C6UzMDM.H6dfI/f/IKxGhuDpkXWhjq9Gi7b3vwxt5xOlIYbpN6.Hq".into(),
        "$2y$04$C6UzMDM.H6dfI/f/IKxGhuDpkXWhjq9Gi7b3vwxt5xOlIYbpN6.Hq".into(),
    ] {
        validate_password_hash(&ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "hunter2".to_string(),
        "".into(),
        "$".into(),
        "$6$short".into(),
        format!("$6$saltsalt${}", &body[1..]),
        format!("$6$saltsalt${body}x"),
        format!("$6$saltsalt$!{}", &body[1..]),
        format!("$6$sa:lt${body}"),
        format!("$6$${body}"),
        format!("$6$seventeen-chars-x${body}"),
        format!("$6$rounds=x$saltsalt${body}"),
        format!("$6$rounds=0100$saltsalt${body}"),
        format!("$6$saltsalt${body}\u{85}"),
        format!("$6$salt\u{7f}salt${body}"),
        format!("$6$salt\u{fffe}${body}"),
        "$1$saltsalt$qjXMvbEw8oaL.CzflDugX/".into(),
        "$y$j9T$salt$tooshort".into(),
        "$y$$salt$RpxLcDXsMn6ZC0Fo3dZ.VYbP2WvQq8sDjSWpaOlfxR6".into(),
        "$2b$3$C6UzMDM.H6dfI/f/IKxGhuDpkXWhjq9Gi7b3vwxt5xOlIYbpN6.Hq".into(),
        "$2x$12$C6UzMDM.H6dfI/f/IKxGhuDpkXWhjq9Gi7b3vwxt5xOlIYbpN6.Hq".into(),
        "$3$$8846f7eaee8fb117ad06bdd830b7586c".into(),
        "$9$whatever$x".into(),
        "abJnggxhB/yWI".into(),
    ] {
        let err = validate_password_hash(&bad).unwrap_err().to_string();
        assert!(bad.len() <= 3 || !err.contains(&bad), "echoed: {err}");
        assert!(
            err.contains("crypt(3)") || err.contains("MD5"),
            "{bad}: {err}"
        );
    }
}

const ED25519: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6";

#[test]
fn ssh_public_keys_parse_as_openssh_keys() {
    assert_eq!(
        parse_ssh_public_key(&format!("  ssh-ed25519\t{ED25519}   me@host laptop \n")).unwrap(),
        format!("ssh-ed25519 {ED25519} me@host laptop")
    );
    assert_eq!(
        parse_ssh_public_key(&format!("ssh-ed25519 {ED25519}")).unwrap(),
        format!("ssh-ed25519 {ED25519}")
    );
    parse_ssh_public_key(&format!("ssh-ed25519 {ED25519} José")).unwrap();
    let blob = |ty: &str, tail: &[u8]| {
        let mut b = (ty.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(ty.as_bytes());
        b.extend_from_slice(tail);
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    for ty in SSH_KEY_TYPES {
        parse_ssh_public_key(&format!("{ty} {}", blob(ty, &[0, 0, 0, 1, 9]))).unwrap();
    }
    for (line, why) in [
        (String::new(), "key type"),
        ("root:$y$j9T$SECRET:19700:0:99999:7:::".into(), "key type"),
        (format!("ssh-dss {}", blob("ssh-dss", &[1])), "DSA"),
        (format!("command=\"id\" ssh-ed25519 {ED25519}"), "options"),
        (
            format!("no-pty,from=\"x\" ssh-ed25519 {ED25519} c"),
            "options",
        ),
        ("ssh-ed25519".into(), "no key blob"),
        ("ssh-ed25519 !!!!".into(), "base64"),
        ("ssh-ed25519 AAAA".into(), "too short"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5".into(), "no key after"),
        (format!("ssh-rsa {ED25519}"), "holds an ssh-ed25519 key"),
        (format!("ssh-rsa {}", blob("x-evil", &[1])), "another type"),
        (format!("ssh-ed25519 {ED25519} a\u{7f}b"), "U+007F"),
        (format!("ssh-ed25519 {ED25519} a\u{85}b"), "U+0085"),
        (format!("ssh-ed25519 {ED25519} a\u{9b}b"), "U+009B"),
        (format!("ssh-ed25519 {ED25519} a\u{1b}[2Jb"), "U+001B"),
        (format!("ssh-ed25519 {ED25519} a\u{fffe}b"), "U+FFFE"),
        (format!("ssh-ed25519 {ED25519} a\u{202e}b"), "U+202E"),
    ] {
        let err = parse_ssh_public_key(&line).unwrap_err();
        assert!(err.contains(why), "{line:?}: {err}");
        assert!(!err.contains("SECRET"), "{err}");
    }
}

#[test]
fn sizes() {
    assert_eq!(parse_size("--disk", "20G").unwrap(), 20 << 30);
    assert_eq!(parse_size("--disk", "512MiB").unwrap(), 512 << 20);
    assert_eq!(parse_size("--disk", "1024").unwrap(), 1024);
    assert!(parse_size("--disk", "20X").is_err());
    assert!(parse_size("--disk", "G").is_err());
    assert!(parse_size("--disk", "0").is_err());
    assert_eq!(parse_memory_mib("2048").unwrap(), 2048);
    assert_eq!(parse_memory_mib("4G").unwrap(), 4096);
    assert!(parse_memory_mib("1M").is_err());
}

#[test]
fn macs() {
    let m = random_mac();
    assert!(m.starts_with("52:54:00:"));
    assert_eq!(parse_mac(&m).unwrap(), m);
    assert_eq!(parse_mac("52:54:00:AA:bb:01").unwrap(), "52:54:00:aa:bb:01");
    assert!(parse_mac("01:00:5e:00:00:01").is_err());
    assert!(parse_mac("ff:ff:ff:ff:ff:ff").is_err());
    let zero = parse_mac("00:00:00:00:00:00").unwrap_err().to_string();
    assert!(zero.contains("all zeros"), "{zero}");
    assert!(parse_mac("52:54:00:aa:bb").is_err());
}
