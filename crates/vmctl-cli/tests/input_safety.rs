//! Hostile input through the real binary: names, addresses, users, password hashes, SSH keys and
//! input files that vmctl must refuse (exit 2, an `error:` and a `help:` line, nothing created),
//! seed files that cloud-init must read back with the types vmctl meant, error messages that
//! never echo a file's content, and text output that never passes control or bidi characters
//! through to the terminal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use base64::Engine;

/// An Ed25519 public key (the blob's embedded type is `ssh-ed25519`).
const ED25519_BLOB: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6";

/// Long enough for any read that is not capped to show: a test run would time out on it. Not
/// shorter: `talos config` generates a 4096-bit RSA key, which took over 30 s on a loaded
/// 2-core machine (the child was killed and the test failed with an empty stderr).
const TIMEOUT: Duration = Duration::from_secs(120);

fn vmctl() -> Command {
    let mut c = Command::cargo_bin("vmctl").unwrap();
    for k in [
        "VMCTL_CONNECT",
        "VMCTL_BRIDGE",
        "VMCTL_STORAGE_DIR",
        "VMCTL_IMAGE_CACHE",
        "VMCTL_SSH_KEY",
        "VMCTL_SSH_USER",
        "VMCTL_LOG",
    ] {
        c.env_remove(k);
    }
    c.timeout(TIMEOUT);
    c
}

/// A host root with bridge br0 and an /etc/passwd that has a system account (`postgres`,
/// uid 114) and a regular one (`alice`, uid 1000); an SSH key; a small base image.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("root/sys/class/net/br0/bridge")).unwrap();
        std::fs::create_dir_all(d.join("root/etc")).unwrap();
        std::fs::write(
            d.join("root/etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\n\
             postgres:x:114:120:PostgreSQL administrator:/var/lib/postgresql:/bin/bash\n\
             alice:x:1000:1000:Alice:/home/alice:/bin/bash\n",
        )
        .unwrap();
        std::fs::write(
            d.join("id.pub"),
            format!("ssh-ed25519 {ED25519_BLOB} t@h\n"),
        )
        .unwrap();
        let ok = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(d.join("base.qcow2"))
            .arg("64M")
            .status()
            .unwrap();
        assert!(ok.success());
        Self { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `vmctl create ubuntu NAME` on the test driver from the local base image, with this
    /// host's SSH key unless `extra` passes another.
    fn create(&self, name: &str, extra: &[&str]) -> Command {
        let d = self.dir.path();
        let mut c = vmctl();
        c.env("VMCTL_STORAGE_DIR", "/vms")
            .env("VMCTL_IMAGE_CACHE", "/cache")
            .arg("--host-root")
            .arg(d.join("root"))
            .args(["--connect", "test:///default", "create", "ubuntu", name])
            .args(["--domain-type", "qemu", "--bridge", "br0"])
            .arg("--image")
            .arg(d.join("base.qcow2"));
        if !extra.contains(&"--seed-only") {
            c.arg("--no-start");
        }
        if !extra.contains(&"--ssh-key") {
            c.arg("--ssh-key").arg(d.join("id.pub"));
        }
        c.args(extra);
        c
    }

    fn vms_left(&self) -> usize {
        std::fs::read_dir(self.path("root/vms"))
            .map(|r| r.count())
            .unwrap_or(0)
    }

    /// Asserts the refusal contract: exit 2, `error:` naming `msg`, a `help:` line, nothing made.
    /// Returns stderr.
    fn refused(&self, mut cmd: Command, what: &str, msg: &str) -> String {
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains("error:"), "{what}: {stderr}");
        assert!(stderr.contains(msg), "{what}: wanted {msg:?} in {stderr}");
        assert!(stderr.contains("\nhelp: "), "{what}: {stderr}");
        assert_eq!(self.vms_left(), 0, "{what} left storage behind");
        stderr
    }
}

#[test]
fn vm_names_that_are_not_host_labels_are_refused() {
    let h = Host::new();
    for name in ["x-", "x.", "a_b", "a.b", "1.5", "1_0", "~", "x\u{202e}y"] {
        h.refused(h.create(name, &[]), name, "invalid VM name");
    }
}

/// Names YAML 1.1 reads as booleans, null or numbers. Those that are host labels must come
/// back from every seed file as strings; the others are refused as VM names.
const YAML_LOOKALIKES: &[&str] = &[
    "yes", "on", "null", "1.5", "0x1f", "012", "1_0", "true", "off", "no", "y", "n", "1e3", "~",
];

fn is_host_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Loads each file with cloud-init's own YAML loader (what the NoCloud datasource uses) and
/// prints, per file, the loaded document as JSON with every scalar tagged by its Python type.
const LOAD_WITH_CLOUD_INIT: &str = r#"
import json, sys
from cloudinit import util

def tag(v):
    if isinstance(v, dict):
        return {str(k): tag(x) for k, x in v.items()}
    if isinstance(v, list):
        return [tag(x) for x in v]
    return [type(v).__name__, str(v)]

out = {}
for p in sys.argv[1:]:
    doc = util.load_yaml(open(p, encoding="utf-8").read())
    out[p.rsplit("/", 1)[-1]] = None if doc is None else tag(doc)
print(json.dumps(out))
"#;

/// The Python that runs cloud-init (its script's `#!` line): cloud-init's modules are installed
/// for that interpreter, not necessarily for the first `python3` on PATH.
fn cloud_init_python() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let script = std::env::split_paths(&path)
        .map(|d| d.join("cloud-init"))
        .find(|p| p.is_file())
        .expect("cloud-init is installed (apt-get install cloud-init)");
    let text = std::fs::read_to_string(&script).unwrap();
    let shebang = text.lines().next().unwrap_or_default();
    shebang
        .strip_prefix("#!")
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("python3")
        .to_string()
}

fn iso_file(iso: &Path, name: &str, to: &Path) -> PathBuf {
    let out = std::process::Command::new("isoinfo")
        .args(["-R", "-i"])
        .arg(iso)
        .args(["-x", &format!("/{name}")])
        .output()
        .expect("isoinfo is installed (genisoimage)");
    assert!(out.status.success());
    let p = to.join(name);
    std::fs::write(&p, out.stdout).unwrap();
    p
}

#[test]
fn yaml_lookalike_names_stay_strings_in_every_seed_file() {
    let h = Host::new();
    for name in YAML_LOOKALIKES {
        if !is_host_label(name) {
            h.refused(h.create(name, &["--seed-only"]), name, "invalid VM name");
            continue;
        }
        let out = h.create(name, &["--seed-only", "--json"]).output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let iso = PathBuf::from(v["seed"].as_str().unwrap());
        let files = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = ["user-data", "meta-data", "network-config"]
            .iter()
            .map(|f| iso_file(&iso, f, files.path()))
            .collect();
        let loaded = std::process::Command::new(cloud_init_python())
            .arg("-c")
            .arg(LOAD_WITH_CLOUD_INIT)
            .args(&paths)
            .output()
            .unwrap();
        assert!(
            loaded.status.success(),
            "{}",
            String::from_utf8_lossy(&loaded.stderr)
        );
        let docs: serde_json::Value = serde_json::from_slice(&loaded.stdout).unwrap();
        let s = |x: &str| serde_json::json!(["str", x]);
        let md = &docs["meta-data"];
        assert_eq!(md["local-hostname"], s(name), "{name}: meta-data {md}");
        assert_eq!(md["instance-id"][0], "str", "{name}: meta-data {md}");
        let ud = &docs["user-data"];
        assert_eq!(ud["hostname"], s(name), "{name}: user-data {ud}");
        assert_eq!(ud["users"][0]["name"], s("ubuntu"), "{name}: {ud}");
        let nc = &docs["network-config"];
        assert_eq!(nc["version"][0], "int", "{name}: network-config {nc}");
        assert_eq!(
            nc["ethernets"]["nic0"]["match"]["macaddress"][0], "str",
            "{name}: network-config {nc}"
        );
        let schema = std::process::Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&paths[0])
            .output()
            .unwrap();
        assert!(
            schema.status.success(),
            "{name}: cloud-init schema: {}{}",
            String::from_utf8_lossy(&schema.stdout),
            String::from_utf8_lossy(&schema.stderr)
        );
        std::fs::remove_dir_all(h.path("root/vms")).unwrap();
    }
}

#[test]
fn addresses_that_are_no_host_addresses_are_refused() {
    let h = Host::new();
    let cases: &[(&[&str], &str)] = &[
        (&["--ip", "127.0.0.5/8"], "loopback"),
        (&["--ip", "224.0.0.5/24"], "multicast"),
        (&["--ip", "240.0.0.5/24"], "reserved"),
        (&["--ip", "255.255.255.254/24"], "reserved"),
        (&["--ip", "0.1.2.3/8"], "0.0.0.0/8"),
        (&["--ip", "198.018.0.10/24"], "leading zero"),
        (&["--ip", "198.18.0.010/24"], "leading zero"),
        (&["--ip", "198.18.0.0/24"], "network address"),
        (&["--ip", "198.18.0.255/24"], "broadcast address"),
        (
            &["--ip", "198.18.0.10/24", "--gateway", "198.18.0.0"],
            "network address",
        ),
        (
            &["--ip", "198.18.0.10/24", "--gateway", "198.18.0.255"],
            "broadcast address",
        ),
        (
            &["--ip", "198.18.0.10/24", "--gateway", "198.18.0.010"],
            "leading zero",
        ),
        (&["--mac", "00:00:00:00:00:00"], "all zeros"),
        (&["--mac", "ff:ff:ff:ff:ff:ff"], "multicast"),
        (&["--mac", "01:00:5e:00:00:01"], "multicast"),
    ];
    for (extra, msg) in cases {
        h.refused(h.create("net1", extra), &format!("{extra:?}"), msg);
    }
}

#[test]
fn user_names_outside_debians_rules_or_of_system_accounts_are_refused() {
    let h = Host::new();
    let long = "a".repeat(33);
    let cases: &[(&str, &str)] = &[
        ("root", "system account"),
        ("daemon", "system account"),
        ("bin", "system account"),
        ("sys", "system account"),
        ("nobody", "system account"),
        ("sshd", "system account"),
        ("www-data", "system account"),
        ("systemd-network", "system account"),
        ("messagebus", "system account"),
        // Not in the fixed list: a system account of this host (uid 114 in its /etc/passwd).
        ("postgres", "system account"),
        ("Alice", "NAME_REGEX"),
        ("1abc", "NAME_REGEX"),
        ("_apt", "NAME_REGEX"),
        ("a.b", "NAME_REGEX"),
        ("x$", "machine account"),
        (&long, "32"),
    ];
    for (user, msg) in cases {
        let arg = format!("--user={user}");
        h.refused(h.create("usr1", &[&arg]), user, msg);
    }
    // A regular account of the host is a fine guest user.
    h.create("usr1", &["--user", "alice", "--seed-only"])
        .assert()
        .success();
}

/// Valid crypt(3) hashes (openssl passwd -6/-5 -salt saltsalt pw; the others are well-formed
/// per crypt(5)).
const GOOD_HASHES: &[&str] = &[
    "$6$saltsalt$pauPrmdmG4BTE9h2HPmywiw152IFch6BJCEsaY6D.PLTfpV8sqvXwWdyfsgVgozkYH9B80bAip/08R2BPH2xk/",
    "$5$saltsalt$0rl.MZtoLLPP3X0Rdl8riRnphIcAXJY27/aOAyK2hB5",
    "$6$rounds=10000$saltsalt$pauPrmdmG4BTE9h2HPmywiw152IFch6BJCEsaY6D.PLTfpV8sqvXwWdyfsgVgozkYH9B80bAip/08R2BPH2xk/",
    "$y$j9T$F5Jx5fExrKuJdljLajF2S1$RpxLcDXsMn6ZC0Fo3dZ.VYbP2WvQq8sDjSWpaOlfxR6",
    "$2b$12$C6UzMDM.H6dfI/f/IKxGhuDpkXWhjq9Gi7b3vwxt5xOlIYbpN6.Hq",
];

#[test]
fn password_hashes_must_be_crypt_hashes() {
    let h = Host::new();
    let sha512 = GOOD_HASHES[0];
    let body = &sha512["$6$saltsalt$".len()..];
    let cases: Vec<(String, &str)> = vec![
        ("hunter2".into(), "crypt(3)"),
        ("$6$short".into(), "crypt(3)"),
        (format!("$6$saltsalt${}", &body[1..]), "crypt(3)"),
        (format!("$6$saltsalt${body}x"), "crypt(3)"),
        (format!("$6$saltsalt$!{}", &body[1..]), "crypt(3)"),
        (format!("$6$sa:lt${body}"), "crypt(3)"),
        (format!("$6$rounds=x$saltsalt${body}"), "crypt(3)"),
        (format!("$6$saltsalt${body}\u{85}"), "crypt(3)"),
        (format!("$6$salt\u{7f}salt${body}"), "crypt(3)"),
        (format!("$6$salt\u{fffe}${body}"), "crypt(3)"),
        ("$1$saltsalt$qjXMvbEw8oaL.CzflDugX/".into(), "MD5"),
        ("$y$j9T$salt$tooshort".into(), "crypt(3)"),
        ("$9$whatever$x".into(), "crypt(3)"),
    ];
    for (hash, msg) in &cases {
        let arg = format!("--password-hash={hash}");
        let err = h.refused(h.create("pw1", &[&arg]), hash, msg);
        assert!(!err.contains(hash.as_str()), "the hash is echoed: {err}");
    }
    for hash in GOOD_HASHES {
        let arg = format!("--password-hash={hash}");
        h.create("pw1", &[&arg, "--seed-only"]).assert().success();
        std::fs::remove_dir_all(h.path("root/vms")).unwrap();
    }
}

#[test]
fn ssh_keys_must_parse_as_openssh_public_keys() {
    let h = Host::new();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let blob = |ty: &str| {
        let mut b = (ty.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(ty.as_bytes());
        b.extend_from_slice(&[0, 0, 0, 1, 7]);
        b64(&b)
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "no public key"),
        (
            "private",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n".into(),
            "private key",
        ),
        ("short blob", "ssh-ed25519 AAAA t@h\n".into(), "blob"),
        ("not base64", "ssh-ed25519 !!!!AAAA t@h\n".into(), "base64"),
        (
            "type mismatch",
            format!("ssh-rsa {ED25519_BLOB} t@h\n"),
            "ssh-ed25519",
        ),
        (
            "unknown type",
            format!("ssh-foo {} t@h\n", blob("ssh-foo")),
            "key type",
        ),
        ("dsa", format!("ssh-dss {} t@h\n", blob("ssh-dss")), "DSA"),
        (
            "options",
            format!("command=\"id\" ssh-ed25519 {ED25519_BLOB} t@h\n"),
            "options",
        ),
        ("no blob", "ssh-ed25519\n".into(), "blob"),
        (
            "DEL in comment",
            format!("ssh-ed25519 {ED25519_BLOB} t\u{7f}h\n"),
            "comment",
        ),
        (
            "C1 in comment",
            format!("ssh-ed25519 {ED25519_BLOB} t\u{85}h\n"),
            "comment",
        ),
        (
            "ESC in comment",
            format!("ssh-ed25519 {ED25519_BLOB} t\u{1b}[2Jh\n"),
            "comment",
        ),
        (
            "U+FFFE in comment",
            format!("ssh-ed25519 {ED25519_BLOB} t\u{fffe}h\n"),
            "comment",
        ),
        (
            "bidi in comment",
            format!("ssh-ed25519 {ED25519_BLOB} t\u{202e}h\n"),
            "comment",
        ),
    ];
    for (what, text, msg) in &cases {
        let p = h.path("bad.pub");
        std::fs::write(&p, text).unwrap();
        let err = h.refused(
            h.create("key1", &["--ssh-key", p.to_str().unwrap()]),
            what,
            msg,
        );
        assert!(err.contains("SSH public key"), "{what}: {err}");
    }
    // A comment with spaces and non-ASCII letters is fine.
    let p = h.path("ok.pub");
    std::fs::write(&p, format!("ssh-ed25519 {ED25519_BLOB} José's laptop\n")).unwrap();
    h.create("key1", &["--ssh-key", p.to_str().unwrap(), "--seed-only"])
        .assert()
        .success();
}

/// A FIFO nobody writes to: opening it for reading blocks until a writer comes.
fn fifo(p: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn input_files_must_be_small_regular_files() {
    let h = Host::new();
    fifo(&h.path("fifo"));
    std::fs::create_dir(h.path("adir")).unwrap();
    // Valid TOML (comments) and a valid key line, only too large.
    std::fs::write(h.path("big.toml"), "#".repeat(2 << 20)).unwrap();
    std::fs::write(
        h.path("big.pub"),
        format!("ssh-ed25519 {ED25519_BLOB} {}\n", "c".repeat(20 << 10)),
    )
    .unwrap();
    let config = |p: &Path| {
        let mut c = vmctl();
        c.arg("--host-root")
            .arg(h.path("root"))
            .arg("--config")
            .arg(p)
            .args(["config", "show"]);
        c
    };
    for (file, msg) in [
        ("/dev/zero", "not a regular file"),
        ("fifo", "not a regular file"),
        ("adir", "not a regular file"),
        ("big.toml", "larger than"),
    ] {
        h.refused(config(&h.path(file)), file, msg);
    }
    for (file, msg) in [
        ("/dev/zero", "not a regular file"),
        ("fifo", "not a regular file"),
        ("adir", "not a regular file"),
        ("big.pub", "larger than"),
    ] {
        let p = h.path(file);
        h.refused(
            h.create("in1", &["--ssh-key", p.to_str().unwrap()]),
            file,
            msg,
        );
    }
}

/// A file that must never show up in an error: what a symlink to /etc/shadow would leak.
const SECRET: &str = "root:$y$j9T$SECRETSALT$SECRETHASHSECRETHASH:19700:0:99999:7:::\n\
                      daemon:*:19700:0:99999:7:::\n";

#[test]
fn file_errors_give_line_and_column_but_never_content() {
    let h = Host::new();
    let secret = h.path("shadow");
    std::fs::write(&secret, SECRET).unwrap();
    let link = h.path("link");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let config = |p: &Path| {
        let mut c = vmctl();
        c.arg("--host-root")
            .arg(h.path("root"))
            .arg("--config")
            .arg(p)
            .args(["config", "show"]);
        c
    };
    let no_leak = |err: &str, what: &str| {
        for needle in ["SECRET", "root:", "daemon", "19700", "hunter2", "token"] {
            assert!(!err.contains(needle), "{what} leaks {needle:?}: {err}");
        }
    };
    let err = h.refused(config(&link), "config -> secret", "line 1, column ");
    no_leak(&err, "config");
    let err = h.refused(
        h.create("leak1", &["--ssh-key", link.to_str().unwrap()]),
        "ssh key -> secret",
        "SSH public key",
    );
    no_leak(&err, "ssh key");
    // The real /etc/shadow where this test may read it (root).
    if std::fs::read("/etc/shadow").is_ok() {
        let first = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
        let first = first.lines().next().unwrap_or_default().to_string();
        for cmd in [
            config(Path::new("/etc/shadow")),
            h.create("leak2", &["--ssh-key", "/etc/shadow"]),
        ] {
            let err = h.refused(cmd, "/etc/shadow", "/etc/shadow");
            assert!(!err.contains(&first), "{err}");
            assert!(!err.contains("root:"), "{err}");
        }
    }
    // Valid TOML whose keys and values are someone else's.
    let other = h.path("other.toml");
    std::fs::write(&other, "# settings\napi_token = \"hunter2\"\n").unwrap();
    let err = h.refused(config(&other), "foreign TOML", "line 2, column 1");
    no_leak(&err, "foreign TOML");
    // Not UTF-8: the position of the first bad byte.
    let latin1 = h.path("latin1.toml");
    std::fs::write(&latin1, b"# ok\nbridge = \"br\xe40\"\n").unwrap();
    h.refused(config(&latin1), "not UTF-8", "line 2, column 13");
}

#[test]
fn schematic_files_are_small_regular_files_never_quoted() {
    let h = Host::new();
    let secret = h.path("shadow");
    std::fs::write(&secret, SECRET).unwrap();
    let yaml = h.path("s.yaml");
    std::fs::write(
        &yaml,
        "customization:\n  systemExtensions:\n    officialExtensions: SECRETVALUE\n",
    )
    .unwrap();
    fifo(&h.path("fifo"));
    let schematic = |p: &Path| {
        let mut c = vmctl();
        c.env("VMCTL_TALOS_FACTORY_URL", "http://127.0.0.1:9")
            .env("VMCTL_GITHUB_API_URL", "http://127.0.0.1:9")
            .arg("--host-root")
            .arg(h.path("root"))
            .args(["talos", "schematic", "--file"])
            .arg(p);
        c
    };
    for (file, msg) in [
        (Path::new("/dev/zero"), "not a regular file"),
        (h.path("fifo").as_path(), "not a regular file"),
        (secret.as_path(), "line 1, column "),
        (yaml.as_path(), "line 3, column "),
    ] {
        let err = h.refused(schematic(file), &file.display().to_string(), msg);
        for needle in ["SECRET", "root:", "19700"] {
            assert!(
                !err.contains(needle),
                "{} leaks {needle}: {err}",
                file.display()
            );
        }
    }
}

#[test]
fn config_values_must_be_strings() {
    let h = Host::new();
    for (text, msg) in [
        ("bridge = 5\n", "line 1, column 10"),
        ("# c\nbridge = true\n", "line 2, column 10"),
        ("bridge = 1.5\n", "line 1, column 10"),
        ("bridge = [\"br0\"]\n", "line 1, column 10"),
        ("ssh_user = 1979-05-27\n", "line 1, column 12"),
    ] {
        let p = h.path("c.toml");
        std::fs::write(&p, text).unwrap();
        let mut c = vmctl();
        c.arg("--host-root")
            .arg(h.path("root"))
            .arg("--config")
            .arg(&p)
            .args(["config", "show"]);
        let err = h.refused(c, text, msg);
        assert!(err.contains("must be a string"), "{err}");
    }
}

/// A test-driver node with domains whose names carry control and bidi characters (libvirt
/// accepts them; vmctl's own names are validated, but `list` shows every domain).
fn odd_node(dir: &Path) -> String {
    let names = [
        "evil\u{202e}gnp.exe",
        "tab\tname",
        "del\u{7f}name",
        "csi\u{9b}31m",
        "lrm\u{200e}iso\u{2066}x",
    ];
    let mut xml = String::from("<node>\n");
    for (i, n) in names.iter().enumerate() {
        xml += &format!(
            "<domain type='test'><name>{n}</name><uuid>6695eb01-f6a4-8304-79aa-97f2502e19{i:02}</uuid>\
             <memory>1048576</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>\n"
        );
    }
    xml += "</node>\n";
    let p = dir.join("node.xml");
    std::fs::write(&p, xml).unwrap();
    format!("test://{}", p.display())
}

fn assert_no_raw_controls(text: &str, what: &str) {
    for c in text.chars() {
        let bad = (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{61c}');
        assert!(!bad, "{what}: raw {c:?} in {text:?}");
    }
}

#[test]
fn names_in_text_output_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let uri = odd_node(dir.path());
    let out = vmctl().args(["--connect", &uri, "list"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_no_raw_controls(&text, "list");
    for shown in [
        "evil\\u{202e}gnp.exe",
        "tab\\u{9}name",
        "del\\u{7f}name",
        "csi\\u{9b}31m",
        "lrm\\u{200e}iso\\u{2066}x",
    ] {
        assert!(text.contains(shown), "{shown} missing in {text}");
    }
    let out = vmctl()
        .args(["--connect", &uri, "info", "evil\u{202e}gnp.exe"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_no_raw_controls(&text, "info");
    assert!(text.contains("evil\\u{202e}gnp.exe"), "{text}");
    // Errors name it escaped too.
    let out = vmctl()
        .args(["--connect", &uri, "start", "evil\u{202e}gnp.exe"])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_no_raw_controls(&err, "start error");
    // JSON carries the name as data (controls escaped by JSON itself).
    let out = vmctl()
        .args(["--connect", &uri, "list", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"evil\u{202e}gnp.exe"), "{names:?}");
}

#[test]
fn unsupported_release_help_lists_the_supported_releases() {
    let h = Host::new();
    let mut c = vmctl();
    c.env("VMCTL_STORAGE_DIR", "/vms")
        .arg("--host-root")
        .arg(h.path("root"))
        .args(["--connect", "test:///default", "create", "ubuntu", "rel1"])
        .args(["--bridge", "br0", "--release", "20.04", "--ssh-key"])
        .arg(h.path("id.pub"));
    let err = h.refused(c, "20.04", "20.04");
    let help: Vec<&str> = err.lines().filter(|l| l.starts_with("help: ")).collect();
    for r in vmctl::guest_media::releases::RELEASES {
        let listed = format!("{} ({})", r.version, r.codename);
        assert!(
            help.iter().any(|l| l.contains(&listed)),
            "{listed} not in the help lines: {help:?}"
        );
    }
}

/// The `--endpoint` paragraph of a `--help` text, joined into one line.
fn endpoint_help(args: &[&str]) -> String {
    let out = vmctl().args(args).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut para = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("--endpoint") {
            inside = true;
        } else if inside && (t.starts_with('-') || t.is_empty()) {
            break;
        }
        if inside {
            para.push(t.trim_start_matches("--endpoint <URL>").trim());
        }
    }
    para.join(" ")
}

/// The URLs a help paragraph gives as examples (templates such as `https://<--ip>:6443` and
/// `https://HOST:PORT` excluded).
fn examples(help: &str) -> Vec<String> {
    help.split_whitespace()
        .filter(|w| w.contains("://") && !w.contains('<') && !w.contains("HOST"))
        .map(|w| w.trim_end_matches([',', '.', ';', ')']).to_string())
        .collect()
}

/// `vmctl talos config --endpoint URL` and `create talos --endpoint`: every example the help
/// gives works, both helps describe the same forms, and the forms they rule out are refused.
#[test]
fn talos_endpoint_help_and_validation_agree() {
    let dir = tempfile::tempdir().unwrap();
    let config_help = endpoint_help(&["talos", "config", "--help"]);
    let create_help = endpoint_help(&["create", "talos", "--help"]);
    let listed = examples(&config_help);
    assert!(!listed.is_empty(), "no example in {config_help:?}");
    assert_eq!(listed, examples(&create_help), "{create_help:?}");
    let talos = |endpoint: &str, out: &Path| {
        let mut c = vmctl();
        c.env("VMCTL_GITHUB_API_URL", "http://127.0.0.1:9")
            .env("VMCTL_TALOS_FACTORY_URL", "http://127.0.0.1:9")
            .args([
                "talos",
                "config",
                "--cluster",
                "lab",
                "--endpoint",
                endpoint,
            ])
            .args(["--version", "v1.11.5", "--out"])
            .arg(out);
        c
    };
    for (i, example) in listed.iter().enumerate() {
        let out = dir.path().join(format!("ok{i}"));
        let o = talos(example, &out).output().unwrap();
        assert!(
            o.status.success(),
            "{example} (from the help {config_help:?}) refused ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // The help asks for a port and a host that is an address or a DNS name.
    for bad in [
        "https://198.18.0.10",
        "https://198.18.0.10/",
        "http://198.18.0.10:6443",
        "198.18.0.10:6443",
        "https://k8s_api.example:6443",
        "https://-k8s.example:6443",
        "https://198.18.0.10:6443/api",
        "https://fd00::10:6443",
        "https://[fd00::zz]:6443",
    ] {
        let out = dir.path().join("bad");
        let o = talos(bad, &out).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("help: "), "{bad}: {err}");
        assert!(!out.exists(), "{bad}: files written");
    }
}

/// A bad option value's `help:` line points to the `--help` of the subcommand that was typed,
/// not to another one (it named `create ubuntu` for every command).
#[test]
fn invalid_option_help_names_the_subcommand_that_was_typed() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("sys/class/net/gvbfix0/bridge")).unwrap();
    for (argv, want) in [
        (
            &["create", "talos", "t1", "--ip", "300.1.1.1/24"][..],
            "help: see `vmctl create talos --help` for the format of --ip",
        ),
        (
            &[
                "create",
                "ubuntu",
                "u1",
                "--ip",
                "198.18.0.5/24",
                "--gateway",
                "1.2.3",
            ][..],
            "help: see `vmctl create ubuntu --help` for the format of --gateway",
        ),
    ] {
        let out = vmctl()
            .args(["--connect", "test:///default", "--host-root"])
            .arg(d.path())
            .args(argv)
            .args(["--bridge", "gvbfix0", "--no-start"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {err}");
        assert!(err.contains(want), "{argv:?}: {err}");
    }
}
