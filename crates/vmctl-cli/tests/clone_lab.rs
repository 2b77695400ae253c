//! `vmctl clone` and `vmctl template` on real guests (a module of day2_lab.rs, so its test runs
//! beside the day-2 test: two TCG guests, one per core): a full clone and a linked clone of a
//! stopped VM each boot with their own hostname, address and machine-id, keep the source's
//! files, and the source still boots afterwards; a template saved from the source makes a VM
//! with its settings, a flag overriding one. Addresses 198.18.0.161–.164.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::{BOOT, Vm, guest, json, lab_image_dir, ok, scratch, text, vmctl};

#[test]
#[ignore = "lab: root, the lab libvirtd and booting guests; run with GVB_LAB=1 and --include-ignored"]
fn clones_boot_with_their_own_identity_and_the_source_still_boots() {
    let img = lab_image_dir();
    let tmp = scratch();
    let t = tmp.path();
    let pid = std::process::id();
    let src = Vm {
        name: format!("clsrc-{pid}"),
        tmp: t,
    };
    let full = Vm {
        name: format!("clfull-{pid}"),
        tmp: t,
    };
    let linked = Vm {
        name: format!("cllink-{pid}"),
        tmp: t,
    };
    let from_template = Vm {
        name: format!("cltpl-{pid}"),
        tmp: t,
    };
    let s = |p: PathBuf| p.display().to_string();
    let (base, kernel, initrd, key) = (
        s(img.join("base.qcow2")),
        s(img.join("vmlinuz")),
        s(img.join("initrd.img")),
        s(t.join("id.pub")),
    );
    ok(
        t,
        &[
            "create",
            "ubuntu",
            &src.name,
            "--image",
            &base,
            "--kernel",
            &kernel,
            "--initrd",
            &initrd,
            "--kernel-args",
            "root=/dev/vda rw console=ttyS0 net.ifnames=0",
            "--firmware",
            "bios",
            "--bridge",
            "labbr0",
            "--ip",
            "198.18.0.161/24",
            "--gateway",
            "198.18.0.1",
            "--domain-type",
            "qemu",
            "--cpu-mode",
            "host-model",
            "--cpus",
            "2",
            "--memory",
            "1024",
            "--ssh-key",
            &key,
            "--user",
            "e2e",
            "--data-disk",
            "16M",
            "--wait",
            "--wait-timeout",
            "600",
        ],
    );
    guest(
        t,
        &src.name,
        "echo from-the-source > ~/marker && sync",
        BOOT,
    );
    let src_id = guest(t, &src.name, "cat /etc/machine-id", BOOT);
    ok(t, &["stop", &src.name, "--timeout", "300"]);

    // A full clone: its own name, address and machine-id; the source's files.
    let started = Instant::now();
    let c = json(
        t,
        &[
            "clone",
            &src.name,
            &full.name,
            "--ip",
            "198.18.0.162/24",
            "--wait",
        ],
    );
    eprintln!(
        "clone (full) + boot: {:.1} s, clone alone {:.2} s",
        started.elapsed().as_secs_f64(),
        c["seconds"].as_f64().unwrap()
    );
    assert_eq!(c["ip"], "198.18.0.162/24", "{c:#}");
    assert_eq!(c["linked"], false);
    check_identity(t, &full.name, "198.18.0.162", &src_id);
    // The gateway came from the source's seed: the clone's own seed says so.
    let seed = t.join("vms").join(&full.name).join("seed.iso");
    let net = Command::new("isoinfo")
        .args(["-R", "-i"])
        .arg(&seed)
        .args(["-x", "/network-config"])
        .output()
        .unwrap();
    assert!(
        text(&net.stdout).contains("via: \"198.18.0.1\""),
        "{}",
        text(&net.stdout)
    );
    assert_eq!(
        guest(t, &full.name, "cat /sys/block/vdc/size", BOOT),
        (16u64 << 11).to_string()
    );
    ok(t, &["stop", &full.name, "--timeout", "300"]);

    // A linked clone: a thin overlay on the source's frozen disk; the source moves onto its own.
    let started = Instant::now();
    let c = json(
        t,
        &[
            "clone",
            &src.name,
            &linked.name,
            "--linked",
            "--ip",
            "198.18.0.163/24",
            "--wait",
        ],
    );
    eprintln!(
        "clone (linked) + boot: {:.1} s, clone alone {:.2} s",
        started.elapsed().as_secs_f64(),
        c["seconds"].as_f64().unwrap()
    );
    let frozen = c["backing"].as_str().unwrap().to_string();
    let src_disk = c["source_disk"].as_str().unwrap().to_string();
    check_identity(t, &linked.name, "198.18.0.163", &src_id);
    let chain = Command::new("qemu-img")
        .args(["info", "-U", "--output=json", c["disk"].as_str().unwrap()])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&chain.stdout).unwrap();
    assert_eq!(info["full-backing-filename"], frozen.as_str(), "{info:#}");
    ok(t, &["stop", &linked.name, "--timeout", "300"]);

    // The source boots on its new overlay, as itself, with its file.
    ok(t, &["start", &src.name]);
    assert_eq!(guest(t, &src.name, "hostname", BOOT), src.name);
    assert_eq!(guest(t, &src.name, "cat ~/marker", BOOT), "from-the-source");
    let disks = json(t, &["disk", "list", &src.name]);
    assert_eq!(disks["disks"][0]["path"], src_disk.as_str(), "{disks:#}");
    ok(t, &["stop", &src.name, "--timeout", "300"]);

    // A template from the source: a read-only flattened image and the source's settings; a VM
    // made from it has the source's files, an identity of its own, and a flag wins over a value.
    let tpl = format!("tpl-{pid}");
    let saved = json(t, &["template", "save", &src.name, &tpl]);
    eprintln!("template save: {:.2} s", saved["seconds"].as_f64().unwrap());
    let image = saved["image"].as_str().unwrap().to_string();
    let mode = std::fs::metadata(&image).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o444, "{image}");
    assert_eq!(saved["template"]["cpus"], 2, "{saved:#}");
    ok(
        t,
        &[
            "create",
            "ubuntu",
            &from_template.name,
            "--template",
            &tpl,
            "--cpus",
            "1",
            "--bridge",
            "labbr0",
            "--ip",
            "198.18.0.164/24",
            "--gateway",
            "198.18.0.1",
            "--ssh-key",
            &key,
            "--wait",
            "--wait-timeout",
            "600",
        ],
    );
    check_identity(t, &from_template.name, "198.18.0.164", &src_id);
    assert_eq!(guest(t, &from_template.name, "nproc", BOOT), "1");
    let listed = json(t, &["template", "list"]);
    assert_eq!(
        listed[0]["used_by"][0],
        from_template.name.as_str(),
        "{listed:#}"
    );
    let refused = vmctl(t, &["template", "delete", &tpl, "--yes"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    ok(t, &["stop", &from_template.name, "--timeout", "300"]);

    // Clones first, then the source: nothing is left.
    for vm in [&from_template.name, &linked.name, &full.name, &src.name] {
        ok(t, &["delete", vm, "--yes"]);
    }
    ok(t, &["template", "delete", &tpl, "--yes"]);
    assert!(!Path::new(&image).exists());
    let left: Vec<_> = std::fs::read_dir(t.join("vms"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The clone answers as itself: hostname, address, the source's marker, a new machine-id.
fn check_identity(t: &Path, name: &str, ip: &str, source_machine_id: &str) {
    assert_eq!(guest(t, name, "hostname", BOOT), name);
    assert!(guest(t, name, "ip -4 addr show", BOOT).contains(&format!("inet {ip}/24")));
    assert_eq!(guest(t, name, "cat ~/marker", BOOT), "from-the-source");
    let id = guest(t, name, "cat /etc/machine-id", BOOT);
    assert_eq!(id.len(), 32, "{id}");
    assert_ne!(
        id, source_machine_id,
        "the clone kept the source's machine-id"
    );
}
