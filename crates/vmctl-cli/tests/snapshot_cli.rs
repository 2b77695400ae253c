//! CLI tests of `vmctl snapshot` against libvirt's test driver: the help names every
//! subcommand, bad names and `--memory` with a VFIO device are refused (exit 2, a `help:` line,
//! nothing changed), and `list --json` is typed. Snapshots on real disks are snapshot_lab's.

use assert_cmd::Command;

fn vmctl() -> Command {
    let mut c = Command::cargo_bin("vmctl").unwrap();
    for k in ["VMCTL_CONNECT", "VMCTL_STORAGE_DIR", "VMCTL_IMAGE_CACHE"] {
        c.env_remove(k);
    }
    c
}

fn stdout(args: &[&str]) -> String {
    let out = vmctl().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_names_every_snapshot_subcommand() {
    let top = stdout(&["--help"]);
    assert!(top.contains("snapshot"), "{top}");
    let help = stdout(&["snapshot", "--help"]);
    for sub in ["create", "list", "revert", "delete"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} missing:\n{help}"
        );
    }
    let create = stdout(&["snapshot", "create", "--help"]);
    for flag in ["--memory", "--quiesce", "--json"] {
        assert!(create.contains(flag), "{flag} missing:\n{create}");
    }
}

/// Exit 2 with the reason and a `help:` line; returns stderr.
fn refused(args: &[&str]) -> String {
    let out = vmctl().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}:\n{err}");
    assert!(err.contains("\nhelp: "), "{args:?}: no help line:\n{err}");
    err
}

#[test]
fn bad_snapshot_names_are_refused() {
    for name in ["a/b", "../x", "-x", "a b", &"x".repeat(65)] {
        for sub in ["create", "revert", "delete"] {
            let err = refused(&[
                "--connect",
                "test:///default",
                "snapshot",
                sub,
                "test",
                "--",
                name,
            ]);
            assert!(err.contains("invalid snapshot name"), "{err}");
            assert!(err.contains("letters, digits"), "{err}");
        }
    }
    let err = refused(&[
        "--connect",
        "test:///default",
        "snapshot",
        "revert",
        "test",
        "nope",
    ]);
    assert!(
        err.contains("help: `vmctl snapshot list test` shows its snapshots"),
        "{err}"
    );
}

/// A node file for the test driver: one running domain `gpu1` holding a GPU's function.
fn vfio_node(dir: &std::path::Path) -> String {
    let node = dir.join("node.xml");
    std::fs::write(
        &node,
        "<node><domain type='test'><name>gpu1</name><memory>1048576</memory>\
         <os><type>hvm</type></os><devices>\
         <hostdev mode='subsystem' type='pci' managed='yes'><source>\
         <address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source></hostdev>\
         </devices></domain></node>",
    )
    .unwrap();
    format!("test://{}", node.display())
}

#[test]
fn memory_snapshot_of_a_vm_with_a_vfio_device_is_refused_and_a_quiesced_one_offered() {
    let dir = tempfile::tempdir().unwrap();
    let uri = vfio_node(dir.path());
    let err = refused(&[
        "--connect",
        &uri,
        "snapshot",
        "create",
        "gpu1",
        "s1",
        "--memory",
    ]);
    assert!(
        err.contains("VFIO device passed through (0000:01:00.0)"),
        "{err}"
    );
    assert!(err.contains("memory state cannot be saved"), "{err}");
    assert!(
        err.contains("help: take a disk-only snapshot instead, quiesced through the guest agent: `vmctl snapshot create gpu1 s1 --quiesce`"),
        "{err}"
    );
    // libvirt quiesces disk-only snapshots only: the two flags are refused together.
    let out = vmctl()
        .args([
            "--connect",
            &uri,
            "snapshot",
            "create",
            "gpu1",
            "s1",
            "--memory",
            "--quiesce",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    let json = refused(&[
        "--connect",
        &uri,
        "--json",
        "snapshot",
        "create",
        "gpu1",
        "s1",
        "--memory",
    ]);
    assert!(json.contains("--quiesce"), "{json}");
}

#[test]
fn list_json_is_typed() {
    let v: serde_json::Value = serde_json::from_str(&stdout(&[
        "--connect",
        "test:///default",
        "--json",
        "snapshot",
        "list",
        "test",
    ]))
    .unwrap();
    assert_eq!(v["vm"], "test");
    assert_eq!(v["snapshots"], serde_json::json!([]));
    assert!(
        v["libvirt_version"]
            .as_str()
            .unwrap()
            .starts_with(|c: char| c.is_ascii_digit())
    );
    assert!(["libvirt", "vmctl"].contains(&v["revert_by"].as_str().unwrap()));
    let text = stdout(&["--connect", "test:///default", "snapshot", "list", "test"]);
    assert_eq!(text, "test: no snapshots\n");
}
