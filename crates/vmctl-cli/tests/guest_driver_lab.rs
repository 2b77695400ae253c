//! Lab test of the guest NVIDIA stack end to end, with a local apt repository standing in for
//! NVIDIA's: dummy .debs named like the real packages (`nvidia-open-580` ships a fake
//! `/usr/bin/nvidia-smi` that prints canned CSV), `Packages` from dpkg-scanpackages, a Release
//! with SHA256 hashes signed with a throwaway gpg key into InRelease, served on the lab bridge
//! (198.18.0.1, netns vmlab). The seed comes from the real CLI: `vmctl --host-root <fixture
//! host with a Turing GPU> create ubuntu … --gpu … --seed-only` with the repository and key
//! URLs pointed at the local server; a lab VM (no GPU: TCG) boots with it. Asserted over SSH:
//! the keyring and the source are in place, the dummy driver is installed (so apt verified the
//! InRelease signature with the keyring vmctl dearmored), the guest rebooted once because
//! `modprobe nvidia` failed, and `vmctl gpu check` reports the canned GPU. A WRONG key is
//! checked in the same guest (one boot): with the keyring swapped, apt refuses the
//! repository, and cloud-init's install step fails with apt's refusal in the output log
//! `create --wait` shows. Address 198.18.0.180, MAC 52:54:00:18:00:80, VMs `drv-…`, port 18180.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic

#[path = "lab_support.rs"]
mod lab_support;

use lab_support::{Vm, lab_image_dir, scratch, text, vmctl};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const IP: &str = "198.18.0.180";
const MAC: &str = "52:54:00:18:00:80";
const PORT: u16 = 18180;
/// What the fake nvidia-smi prints: nvidia-smi's `--format=csv,noheader,nounits` shape.
const CANNED: &str =
    "0, 00000000:06:00.0, 0x1E8410DE, NVIDIA GeForce RTX 2070 SUPER, 580.95.05, 8192, [N/A]";

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn ok(tmp: &Path, args: &[&str]) -> String {
    let o = vmctl(tmp, args);
    assert!(
        o.status.success(),
        "vmctl {args:?} failed ({:?}):\n{}{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// A command in the guest, retried until it succeeds or `timeout` passes (a wait on a state,
/// with SSH's own timeouts between tries).
fn guest(tmp: &Path, vm: &str, cmd: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let o = vmctl(tmp, &["ssh", vm, "--", cmd]);
        if o.status.success() {
            return text(&o.stdout).trim().to_string();
        }
        assert!(
            start.elapsed() < timeout,
            "`{cmd}` in {vm} still failing after {timeout:?}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// gpg with its own home (a throwaway keyring for this run).
fn gpg(home: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", home).args(["--batch", "--quiet"]);
    c
}

fn new_key(home: &Path, uid: &str) {
    std::fs::create_dir_all(home).unwrap();
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700)).unwrap();
    run(gpg(home).args([
        "--passphrase",
        "",
        "--quick-gen-key",
        uid,
        "ed25519",
        "sign",
        "never",
    ]));
}

/// A binary .deb named `name` (Architecture: all) with `files` (path, mode, content).
fn deb(work: &Path, out: &Path, name: &str, files: &[(&str, u32, &str)]) {
    let root = work.join(name);
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: 580.95.05-0drv1\nArchitecture: all\nMaintainer: vmctl lab <lab@invalid>\nDescription: dummy {name} for vmctl's guest driver lab test\n"
        ),
    )
    .unwrap();
    for (path, mode, content) in files {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(out.join(format!("{name}_580.95.05-0drv1_all.deb"))));
}

/// The flat repository in `repo`: the .debs, Packages, Release (SHA256) and InRelease signed
/// with the key in `home`; the armoured public key as `key.asc`.
fn make_repo(work: &Path, repo: &Path, home: &Path) {
    std::fs::create_dir_all(repo).unwrap();
    let smi =
        format!("#!/bin/sh\n# vmctl lab: a stand-in for NVIDIA's nvidia-smi\necho '{CANNED}'\n");
    deb(
        work,
        repo,
        "nvidia-open-580",
        &[("/usr/bin/nvidia-smi", 0o755, &smi)],
    );
    let packages = run(Command::new("dpkg-scanpackages")
        .args(["--multiversion", "."])
        .current_dir(repo));
    std::fs::write(repo.join("Packages"), &packages).unwrap();
    let sha = run(Command::new("sha256sum").arg("Packages").current_dir(repo));
    let sha = sha.split_whitespace().next().unwrap();
    let date = run(Command::new("date").args(["-u", "+%a, %d %b %Y %H:%M:%S UTC"]));
    std::fs::write(
        repo.join("Release"),
        format!(
            "Origin: vmctl-lab\nLabel: vmctl-lab\nDate: {}\nSHA256:\n {sha} {} Packages\n",
            date.trim(),
            packages.len()
        ),
    )
    .unwrap();
    run(gpg(home)
        .args(["--yes", "--clearsign", "--output"])
        .arg(repo.join("InRelease"))
        .arg(repo.join("Release")));
    let armoured = run(gpg(home).args(["--armor", "--export"]));
    std::fs::write(repo.join("key.asc"), armoured).unwrap();
}

/// `python3 -m http.server` on the lab bridge address inside netns vmlab; killed on drop.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path) -> Server {
    let child = Command::new("ip")
        .args(["netns", "exec", "vmlab", "python3", "-m", "http.server"])
        .arg(PORT.to_string())
        .args(["--bind", "198.18.0.1", "--directory"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let url = format!("http://198.18.0.1:{PORT}/InRelease");
    let start = Instant::now();
    while !Command::new("ip")
        .args(["netns", "exec", "vmlab", "curl", "-sfo", "/dev/null", &url])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the repo server did not answer"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

#[test]
#[ignore = "lab: root, the lab libvirtd and a booting guest; run with GVB_LAB=1 and --include-ignored"]
fn the_guest_installs_the_driver_from_a_signed_repo_reboots_and_gpu_check_reports_it() {
    let img = lab_image_dir();
    let tmp = scratch();
    let t = tmp.path();
    let work = t.join("work");
    let repo = t.join("repo");
    let good = t.join("gnupg-good");
    let wrong = t.join("gnupg-wrong");
    new_key(&good, "vmctl lab repo <repo@lab.invalid>");
    new_key(&wrong, "vmctl lab wrong key <wrong@lab.invalid>");
    make_repo(&work, &repo, &good);
    let _server = serve(&repo);
    let base_url = format!("http://198.18.0.1:{PORT}");
    std::fs::write(
        t.join("config.toml"),
        format!("guest_cuda_repo = \"{base_url}\"\nguest_cuda_key = \"{base_url}/key.asc\"\n"),
    )
    .unwrap();

    // A fixture host with a Turing GPU (RTX 2070 SUPER at 2b:00.0) and the lab's bridge.
    let host = fixture_builder::build_host("amd-b550m-gt710-rtx2070s");
    std::fs::create_dir_all(host.path().join("sys/class/net/labbr0/bridge")).unwrap();
    let pid = std::process::id();
    let name = format!("drv-lab-{pid}");
    let seed_name = format!("drv-seed-{pid}");
    let s = |p: PathBuf| p.display().to_string();
    let key = s(t.join("id.pub"));
    let cidr = format!("{IP}/24");
    let net: [&str; 14] = [
        "--bridge",
        "labbr0",
        "--ip",
        &cidr,
        "--gateway",
        "198.18.0.1",
        "--mac",
        MAC,
        "--user",
        "e2e",
        "--ssh-key",
        &key,
        "--image",
        &s(img.join("base.qcow2")),
    ];
    let mut args = vec![
        "--host-root",
        host.path().to_str().unwrap(),
        "create",
        "ubuntu",
        &seed_name,
        "--gpu",
        "0000:2b:00.0",
        "--gpu-force",
        "--seed-only",
        "--json",
    ];
    args.extend(net);
    let created: serde_json::Value = serde_json::from_str(&ok(t, &args)).unwrap();
    assert_eq!(created["guest_stack"]["flavour"], "open", "{created}");
    assert_eq!(
        created["guest_stack"]["packages"],
        serde_json::json!(["nvidia-open-580"])
    );
    let seed = PathBuf::from(created["seed"].as_str().unwrap());

    let vm = Vm {
        name: name.clone(),
        tmp: t,
    };
    let (kernel, initrd) = (s(img.join("vmlinuz")), s(img.join("initrd.img")));
    let mut args = vec![
        "create",
        "ubuntu",
        &name,
        "--no-start",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--kernel-args",
        "root=/dev/vda rw console=ttyS0 net.ifnames=0",
        "--firmware",
        "bios",
        "--domain-type",
        "qemu",
        "--cpu-mode",
        "host-model",
        "--cpus",
        "2",
        "--memory",
        "1024",
        "--json",
    ];
    args.extend(net);
    let made: serde_json::Value = serde_json::from_str(&ok(t, &args)).unwrap();
    std::fs::copy(&seed, made["seed"].as_str().unwrap()).unwrap();
    let started = Instant::now();
    ok(t, &["start", &vm.name]);

    // The first boot installs the dummy driver, `modprobe nvidia` fails (no such module), and
    // power_state reboots once: cloud-init logs a second `init-local` stage.
    let boots = guest(
        t,
        &name,
        "test \"$(grep -c \"running 'init-local'\" /var/log/cloud-init.log)\" -ge 2 && grep -c \"running 'init-local'\" /var/log/cloud-init.log",
        Duration::from_secs(1200),
    );
    assert_eq!(boots, "2", "one reboot, not a loop");
    let status = guest(
        t,
        &name,
        "cloud-init status --wait --long",
        Duration::from_secs(600),
    );
    assert!(status.contains("status: done"), "{status}");
    eprintln!(
        "start to ready after the reboot: {:.0} s",
        started.elapsed().as_secs_f64()
    );

    // The keyring (binary, as gpg --dearmor writes it) and the source.
    let keyring = guest(
        t,
        &name,
        "base64 -w0 /etc/apt/keyrings/cuda-archive-keyring.gpg",
        Duration::from_secs(60),
    );
    let exported = Command::new("gpg")
        .env("GNUPGHOME", &good)
        .args(["--batch", "--export"])
        .output()
        .unwrap()
        .stdout;
    use base64::Engine;
    assert_eq!(
        keyring,
        base64::engine::general_purpose::STANDARD.encode(&exported)
    );
    let source = guest(
        t,
        &name,
        "cat /etc/apt/sources.list.d/cuda.list",
        Duration::from_secs(60),
    );
    assert!(
        source.contains(&format!(
            "deb [signed-by=/etc/apt/keyrings/cuda-archive-keyring.gpg] {base_url} /"
        )),
        "{source}"
    );
    // Installed from the signed repository.
    let status = guest(
        t,
        &name,
        "dpkg-query -W -f '${Status} ${Version}' nvidia-open-580",
        Duration::from_secs(60),
    );
    assert_eq!(status, "install ok installed 580.95.05-0drv1");
    let policy = guest(
        t,
        &name,
        "apt-cache policy nvidia-open-580",
        Duration::from_secs(60),
    );
    assert!(policy.contains(&base_url), "{policy}");

    // gpu check over SSH reads the canned GPU.
    let check: serde_json::Value =
        serde_json::from_str(&ok(t, &["gpu", "check", &name, "--json"])).unwrap();
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["gpus"][0]["name"], "NVIDIA GeForce RTX 2070 SUPER");
    assert_eq!(check["gpus"][0]["driver_version"], "580.95.05");
    assert_eq!(check["gpus"][0]["memory_mib"], 8192);
    assert_eq!(check["gpus"][0]["ecc"], "unsupported");
    assert_eq!(check["gpus"][0]["pci_id"], "10de:1e84");

    // A WRONG key, checked in the same guest (a second boot would cost minutes): with the
    // keyring swapped for another key, apt refuses the repository's InRelease.
    let wrong_b64 = base64::engine::general_purpose::STANDARD.encode(
        Command::new("gpg")
            .env("GNUPGHOME", &wrong)
            .args(["--batch", "--export"])
            .output()
            .unwrap()
            .stdout,
    );
    guest(
        t,
        &name,
        &format!(
            "echo {wrong_b64} | base64 -d | sudo tee /etc/apt/keyrings/cuda-archive-keyring.gpg >/dev/null"
        ),
        Duration::from_secs(60),
    );
    // The install step of cloud-init (the module the first boot ran), run again with the wrong
    // keyring: it fails, and the refusal is in the output log whose tail `create --wait` shows
    // when cloud-init reports an error (wait_lab tests that path on a real guest). cloud-init
    // runs `apt-get update` once per instance (the `update_sources` semaphore): removed first.
    // So are the repository's lists: with lists apt verified before, a bad signature is only a
    // warning ("the previous index files will be used"); a first boot has none, and there apt
    // refuses the repository ("is not signed") and the update fails.
    let o = vmctl(
        t,
        &[
            "ssh",
            &name,
            "--",
            "sudo rm -f /var/lib/cloud/instance/sem/update_sources /var/lib/apt/lists/198.18.0.1[:_]*; sudo cloud-init single --name package_update_upgrade_install --frequency always >/dev/null 2>&1; echo rc=$?; sudo tail -n 80 /var/log/cloud-init-output.log",
        ],
    );
    let out = text(&o.stdout);
    assert!(
        !out.starts_with("rc=0"),
        "the install step passed with a wrong key:\n{out}"
    );
    assert!(
        out.contains("NO_PUBKEY") || out.contains("not signed"),
        "apt's refusal is not in cloud-init's output log:\n{out}"
    );
}
