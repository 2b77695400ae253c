//! `vmctl create talos` against the lab's real libvirtd (`tests/lab/up.sh`) with a local stand-in
//! for the Image Factory (a tiny fake nocloud qcow2; no internet). The first node is defined
//! with `--no-start`, checked (seed `user-data` = the generated config, `virt-xml-validate` of
//! libvirt's own XML: UEFI, bridge, MAC), then started by libvirt to prove qemu accepts the
//! firmware, seed and bridge; a GPU worker of the same cluster is defined config-only with a
//! fixture host's BDFs (the lab has no IOMMU). `--iso`: the node is defined with the cached
//! (fake) metal ISO after a blank disk in the boot order and its config on a `metal-iso` volume,
//! started once, then deleted with `vmctl delete`. Root and GVB_LAB=1; without it: "skipped".
#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic

#[path = "../../vmctl/tests/talos_support/mod.rs"]
mod talos_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use talos_support::*;

const URI: &str = "qemu:///system";
const BRIDGE: &str = "labbr0";

fn virsh(args: &[&str]) -> Output {
    Command::new("virsh")
        .args(["-c", URI])
        .args(args)
        .output()
        .expect("virsh (libvirt-clients) is installed")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Destroys and undefines the domains (with NVRAM) and removes the scratch directory, also
/// when an assertion fails.
struct Cleanup {
    domains: Vec<String>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for d in &self.domains {
            let _ = virsh(&["destroy", d]);
            let _ = virsh(&["undefine", "--nvram", d]);
        }
        if std::env::var("GVB_LAB_KEEP").as_deref() != Ok("1") {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn vmctl(base: &str, host: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmctl"));
    c.args(["--connect", URI, "--host-root"])
        .arg(host)
        .env_remove("VMCTL_CONNECT")
        .env_remove("VMCTL_STATE_DIR")
        .env("VMCTL_TALOS_FACTORY_URL", base)
        .env("VMCTL_GITHUB_API_URL", base)
        // Host paths: the disks, seeds and cached images land under the fixture host root.
        .env("VMCTL_STORAGE_DIR", "/vms")
        .env("VMCTL_IMAGE_CACHE", "/cache")
        // TCG only in the lab (tests/lab/README.md); host-passthrough is unsupported there.
        .env("VMCTL_DOMAIN_TYPE", "qemu")
        .env("VMCTL_CPU_MODE", "host-model");
    c
}

fn validate(scratch: &Path, name: &str) -> String {
    let x = virsh(&["dumpxml", "--inactive", name]);
    assert!(x.status.success(), "{}", text(&x.stderr));
    let xml = text(&x.stdout);
    validate_domain_xml(scratch, &xml);
    xml
}

/// Checks the lab libvirtd answers, then makes a scratch directory for one test. qemu runs as
/// libvirt-qemu: the overlay's backing file (in the cache) and the seed must be reachable, so
/// the directory lives under /var/lib/gvb-lab with mode 0755.
fn lab_scratch(kind: &str) -> PathBuf {
    let list = virsh(&["list", "--all"]);
    assert!(
        list.status.success(),
        "lab libvirtd not reachable at {URI} (run tests/lab/up.sh): {}",
        text(&list.stderr)
    );
    std::fs::create_dir_all("/var/lib/gvb-lab").unwrap();
    let scratch = PathBuf::from(format!("/var/lib/gvb-lab/{kind}.{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o755)).unwrap();
    scratch
}

/// A fixture host root that qemu (libvirt-qemu) can traverse: vmctl puts the VM's disks and
/// the image cache under it (`--host-root` maps `storage_dir` and `image_cache`).
fn lab_host(name: &str) -> tempfile::TempDir {
    let host = fixture_builder::build_host(name);
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    host
}

#[test]
#[ignore = "lab: root and the lab libvirtd; run with GVB_LAB=1 and --include-ignored"]
fn create_talos_no_start_on_the_lab_libvirtd_then_boot_firmware() {
    let scratch = lab_scratch("talos");
    let cp = format!("gvb-talos-cp-{}", std::process::id());
    let gw = format!("gvb-talos-gpu-{}", std::process::id());
    let _cleanup = Cleanup {
        domains: vec![cp.clone(), gw.clone()],
        dir: scratch.clone(),
    };
    let server = factory(Some(fake_qcow2(&scratch, "64M")));
    let base = server.base_url();

    // The lab bridge lives in netns vmlab; the fixture host root only has to know its name.
    let host = lab_host("intel-z370-no-nvidia");
    std::fs::create_dir_all(
        host.path()
            .join("sys/class/net")
            .join(BRIDGE)
            .join("bridge"),
    )
    .unwrap();
    let mac = "52:54:00:18:00:75";
    let out = vmctl(&base, host.path())
        .args([
            "create",
            "talos",
            &cp,
            "--bridge",
            BRIDGE,
            "--no-start",
            "--disk",
            "1G",
        ])
        .args([
            "--ip",
            "198.18.0.75/24",
            "--dns",
            "198.18.0.1",
            "--gateway",
            "198.18.0.1",
            "--mac",
            mac,
        ])
        .args(["--memory", "512", "--cpus", "1", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["started"], false);

    let seed = PathBuf::from(created["seed"].as_str().unwrap());
    assert_eq!(iso_label(&seed), "cidata");
    assert_eq!(
        iso_file(&seed, "user-data"),
        rerender_user_data(&created, &base, Some("198.18.0.1")),
        "the seed's user-data is the node's generated machine config"
    );

    let xml = validate(&scratch, &cp);
    assert!(xml.contains(&format!("<mac address='{mac}'/>")), "{xml}");
    assert!(
        xml.contains(&format!("<source bridge='{BRIDGE}'/>")),
        "{xml}"
    );
    assert!(
        xml.contains("firmware='efi'") || xml.contains("<loader"),
        "UEFI: {xml}"
    );
    assert!(
        xml.contains("machine='pc-q35") || xml.contains("machine='q35'"),
        "{xml}"
    );

    // qemu accepts it: UEFI firmware, the overlay over the cached image, the seed, the bridge.
    let st = virsh(&["start", &cp]);
    assert!(st.status.success(), "virsh start: {}", text(&st.stderr));
    let state = virsh(&["domstate", &cp]);
    assert_eq!(text(&state.stdout).trim(), "running");
    let _ = virsh(&["destroy", &cp]);

    // A GPU worker of the same cluster, config-only (fixture BDFs; the lab has no IOMMU).
    let gpu_host = lab_host("synthetic-vfio-bound");
    std::fs::create_dir_all(
        gpu_host
            .path()
            .join("sys/class/net")
            .join(BRIDGE)
            .join("bridge"),
    )
    .unwrap();
    // The worker joins the cluster whose secrets the first create stored (in its host root).
    let state_src = host.path().join("var/lib/vmctl/talos");
    let state_dst = gpu_host.path().join("var/lib/vmctl/talos");
    std::fs::create_dir_all(&state_dst).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(state_src.join(&cp))
        .arg(&state_dst)
        .status()
        .unwrap();
    assert!(st.success());
    let out = vmctl(&base, gpu_host.path())
        .args([
            "create",
            "talos",
            &gw,
            "--bridge",
            BRIDGE,
            "--no-start",
            "--disk",
            "1G",
        ])
        .args(["--role", "worker", "--cluster", &cp, "--gpu", "01:00.0"])
        .args([
            "--ip",
            "198.18.0.76/24",
            "--dns",
            "198.18.0.1",
            "--gateway",
            "198.18.0.1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let worker: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(worker["endpoint"], "https://198.18.0.75:6443");
    let user_data = iso_file(Path::new(worker["seed"].as_str().unwrap()), "user-data");
    assert_eq!(
        user_data,
        rerender_user_data(&worker, &base, Some("198.18.0.1"))
    );
    assert!(user_data.contains("nvidia_uvm"));
    let xml = validate(&scratch, &gw);
    assert!(
        xml.contains("<hostdev mode='subsystem' type='pci' managed='yes'>"),
        "{xml}"
    );
    assert!(
        xml.contains("bus='0x01' slot='0x00' function='0x1'"),
        "{xml}"
    );
}

#[test]
#[ignore = "lab: root and the lab libvirtd; run with GVB_LAB=1 and --include-ignored"]
fn create_talos_iso_no_start_on_the_lab_libvirtd_then_delete() {
    let scratch = lab_scratch("talos-iso");
    let name = format!("gvb-talos-iso-{}", std::process::id());
    let _cleanup = Cleanup {
        domains: vec![name.clone()],
        dir: scratch.clone(),
    };
    let server = factory(None);
    let iso = serve_metal_iso(&server, fake_iso(&scratch));
    let base = server.base_url();
    let host = lab_host("intel-z370-no-nvidia");
    std::fs::create_dir_all(
        host.path()
            .join("sys/class/net")
            .join(BRIDGE)
            .join("bridge"),
    )
    .unwrap();
    let mac = "52:54:00:18:00:77";
    let out = vmctl(&base, host.path())
        .args(["create", "talos", &name, "--iso", "--bridge", BRIDGE])
        .args(["--no-start", "--disk", "2G", "--mac", mac])
        .args(["--ip", "198.18.0.77/24", "--gateway", "198.18.0.1"])
        .args([
            "--dns",
            "198.18.0.1",
            "--memory",
            "512",
            "--cpus",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    iso.assert_calls(1);
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["started"], false);
    assert_eq!(created["kernel_args"][0], "talos.config=metal-iso");
    let id = created["schematic_id"].as_str().unwrap();
    assert!(
        created["installer_image"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/metal-installer/{id}:{LATEST}"))
    );

    let config = PathBuf::from(created["seed"].as_str().unwrap());
    assert_eq!(blkid_label(&config), "metal-iso");
    let yaml = iso_file(&config, "config.yaml");
    assert_eq!(
        yaml,
        rerender_user_data(&created, &base, Some("198.18.0.1")),
        "config.yaml is the node's generated machine config"
    );
    assert_valid_machine_config("v1.12", &yaml);

    // libvirt's own XML: the blank disk boots first, the cached ISO second, the config volume
    // is an unbootable cdrom; UEFI, the bridge and the MAC as for the nocloud node.
    let xml = validate(&scratch, &name);
    assert_eq!(
        boot_orders(&xml),
        [
            ("vda".to_string(), Some(1)),
            ("sda".to_string(), Some(2)),
            ("sdb".to_string(), None)
        ],
        "{xml}"
    );
    let cached_iso = created["base_image"].as_str().unwrap();
    assert!(
        xml.contains(&format!("<source file='{cached_iso}'/>")),
        "{xml}"
    );
    assert_eq!(xml.matches("device='cdrom'").count(), 2, "{xml}");
    assert!(xml.contains(&format!("<mac address='{mac}'/>")), "{xml}");
    assert!(
        xml.contains(&format!("<source bridge='{BRIDGE}'/>")),
        "{xml}"
    );
    assert!(
        xml.contains("firmware='efi'") || xml.contains("<loader"),
        "UEFI: {xml}"
    );

    // qemu accepts the SATA cdroms and the per-device boot order (the fake ISO boots nothing:
    // the firmware just stays up).
    let st = virsh(&["start", &name]);
    assert!(st.status.success(), "virsh start: {}", text(&st.stderr));
    assert_eq!(text(&virsh(&["domstate", &name]).stdout).trim(), "running");
    let _ = virsh(&["destroy", &name]);

    // The node is its own one-node cluster: a plain delete refuses, the cluster's destroy
    // removes it. The VM's disk and config volume go, the cached ISO stays.
    let out = vmctl(&base, host.path())
        .args(["delete", &name, "--yes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = vmctl(&base, host.path())
        .args(["cluster", "destroy", &name, "--yes", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!virsh(&["dominfo", &name]).status.success(), "undefined");
    assert!(!config.exists());
    assert!(!Path::new(created["disk"].as_str().unwrap()).exists());
    assert!(Path::new(cached_iso).exists(), "the cache keeps the ISO");
}

/// The Image Factory stand-in inside the lab netns (`tests/lab/factory_stub.py`), stopped on
/// drop.
struct FactoryStub(std::process::Child);

impl FactoryStub {
    /// Serves `image` on 127.0.0.1:`port` of netns vmlab; returns once it listens (its ready
    /// file exists).
    fn start(scratch: &Path, image: &[u8], port: u16) -> FactoryStub {
        let img = scratch.join("factory.qcow2");
        std::fs::write(&img, image).unwrap();
        let ready = scratch.join("factory.ready");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/lab/factory_stub.py"
        );
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                "vmlab",
                "python3",
                script,
                &port.to_string(),
            ])
            .arg(&img)
            .arg(&ready)
            .spawn()
            .unwrap();
        let stub = FactoryStub(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !ready.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "factory stub did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        stub
    }
}

impl Drop for FactoryStub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `vmctl ARGS` inside the lab netns (its ARP scan sees labbr0), settings as for `vmctl()`.
fn vmctl_in_lab(base: &str, host: &Path, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", "vmlab", "env"])
        .arg(format!("VMCTL_TALOS_FACTORY_URL={base}"))
        .arg(format!("VMCTL_GITHUB_API_URL={base}"))
        .args([
            "VMCTL_STORAGE_DIR=/vms",
            "VMCTL_IMAGE_CACHE=/cache",
            "VMCTL_DOMAIN_TYPE=qemu",
            "VMCTL_CPU_MODE=host-model",
            // Away from the fixed addresses of the other lab tests.
            "VMCTL_RESERVED_IP_RANGE=198.18.0.200-198.18.0.239",
        ])
        .arg(env!("CARGO_BIN_EXE_vmctl"))
        .args(["--connect", URI, "--host-root"])
        .arg(host)
        .args(args)
        .output()
        .unwrap()
}

/// A stand-in Talos node: `test-apid` (talos-api's example) in a network namespace of its own,
/// joined to the lab bridge by a veth, at the node's own address, with an apid certificate the
/// cluster's OS CA signed (from the cluster's secrets). Removed on drop.
struct StandInNode {
    netns: String,
    child: std::process::Child,
}

impl StandInNode {
    fn start(scratch: &Path, cluster_dir: &Path, ip: &str) -> StandInNode {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
        let exe = std::env::current_exe().unwrap();
        let apid = exe
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("examples/test-apid");
        assert!(
            apid.exists(),
            "{} is missing: build it with `cargo build -p talos-api --examples` (make test does)",
            apid.display()
        );
        // apid's certificate, signed by the cluster's OS CA (Talos labels its Ed25519 keys).
        let secrets = talos_image::SecretsBundle::from_yaml(
            &std::fs::read_to_string(cluster_dir.join("secrets.yaml")).unwrap(),
        )
        .unwrap();
        let ca_key = KeyPair::from_pem(
            &secrets
                .certs
                .os
                .key
                .replace("ED25519 PRIVATE KEY", "PRIVATE KEY"),
        )
        .unwrap();
        let issuer = Issuer::from_ca_cert_pem(&secrets.certs.os.crt, ca_key).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::IpAddress(ip.parse().unwrap())];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer).unwrap();
        let certs = scratch.join("apid-certs");
        std::fs::create_dir_all(&certs).unwrap();
        for (name, text) in [
            ("ca.pem", secrets.certs.os.crt.clone()),
            ("server.pem", cert.pem()),
            ("server-key.pem", key.serialize_pem()),
            // Read by test-apid but unused: it only serves.
            ("client.pem", cert.pem()),
            ("client-key.pem", key.serialize_pem()),
        ] {
            std::fs::write(certs.join(name), text).unwrap();
        }

        let id = std::process::id() % 100_000;
        let netns = format!("gvbapid{id}");
        let (outer, inner) = (format!("gvbapa{id}"), format!("gvbapb{id}"));
        let ip_cmd = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        };
        ip_cmd(&["netns", "add", &netns]);
        // From here on the drop removes the namespace, also when a step below fails.
        let mut node = StandInNode {
            netns: netns.clone(),
            child: Command::new("true").spawn().unwrap(),
        };
        ip_cmd(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        ip_cmd(&["link", "set", &outer, "netns", "vmlab"]);
        ip_cmd(&["link", "set", &inner, "netns", &netns]);
        ip_cmd(&["-n", "vmlab", "link", "set", &outer, "master", BRIDGE, "up"]);
        ip_cmd(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            &inner,
        ]);
        ip_cmd(&["-n", &netns, "link", "set", &inner, "up"]);
        ip_cmd(&["-n", &netns, "link", "set", "lo", "up"]);
        let _ = node.child.wait();
        node.child = Command::new("ip")
            .args(["netns", "exec", &netns])
            .arg(&apid)
            .args(["--listen", &format!("{ip}:50000"), "--certs"])
            .arg(&certs)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Ready when it says so (it prints `listening IP:PORT` once bound).
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(node.child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(line.starts_with("listening"), "test-apid: {line:?}");
        node
    }
}

impl Drop for StandInNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

#[test]
#[ignore = "lab: root and the lab libvirtd; run with GVB_LAB=1 and --include-ignored"]
fn cluster_of_three_control_planes_and_two_gpu_workers_is_defined_then_destroyed() {
    let scratch = lab_scratch("cluster");
    let name = format!("gvbclu{}", std::process::id());
    let nodes: Vec<String> = ["cp-1", "cp-2", "cp-3", "gpu-1", "gpu-2"]
        .iter()
        .map(|n| format!("{name}-{n}"))
        .collect();
    let _cleanup = Cleanup {
        domains: nodes.clone(),
        dir: scratch.clone(),
    };
    let port = 20000 + (std::process::id() % 20000) as u16;
    let _factory = FactoryStub::start(&scratch, &fake_qcow2(&scratch, "64M"), port);
    let base = format!("http://127.0.0.1:{port}");
    let host = hgx_without_nvswitch();
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(
        host.path()
            .join("sys/class/net")
            .join(BRIDGE)
            .join("bridge"),
    )
    .unwrap();

    let out = vmctl_in_lab(
        &base,
        host.path(),
        &[
            "cluster",
            "create",
            &name,
            "--control-planes",
            "3",
            "--gpu-workers",
            "2",
            "--no-start",
            "--version",
            LATEST,
            "--bridge",
            BRIDGE,
            "--gateway",
            "198.18.0.1",
            "--dns",
            "198.18.0.1",
            "--cp-cpus",
            "1",
            "--cp-memory",
            "512",
            "--cp-disk",
            "1G",
            "--worker-cpus",
            "1",
            "--worker-memory",
            "512",
            "--worker-disk",
            "1G",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<&str> = c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(got, nodes);

    // Every address distinct, inside the pool, the VIP too; the endpoint is the VIP.
    let mut ips: Vec<String> = c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["ip"].as_str().unwrap().to_string())
        .collect();
    let vip = c["vip"].as_str().unwrap().to_string();
    assert_eq!(c["endpoint"], format!("https://{vip}:6443"));
    ips.push(vip);
    let distinct: std::collections::BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 6, "{ips:?}");
    for ip in &ips {
        let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
        assert!(
            ip.starts_with("198.18.0.") && (200..=239).contains(&last),
            "{ip}"
        );
    }

    // libvirt's own XML validates; each GPU worker holds one whole GPU of its own.
    let mut gpus = Vec::new();
    for n in &nodes {
        let xml = validate(&scratch, n);
        let hostdevs = xml.matches("<hostdev mode='subsystem' type='pci'").count();
        if n.contains("-gpu-") {
            assert_eq!(hostdevs, 1, "{n}: {xml}");
            let at = xml.find("<hostdev").unwrap();
            gpus.push(xml[at..at + 400].to_string());
        } else {
            assert_eq!(hostdevs, 0, "{n}");
        }
        let seed = host.path().join("vms").join(n).join("seed.iso");
        assert_valid_machine_config("v1.12", &iso_file(&seed, "user-data"));
    }
    assert_ne!(gpus[0], gpus[1]);

    // A node is not deleted on its own; `cluster show` lists them.
    let out = vmctl_in_lab(&base, host.path(), &["delete", &nodes[3], "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cluster remove-node"),
        "{}",
        text(&out.stderr)
    );
    let out = vmctl_in_lab(&base, host.path(), &["cluster", "show", &name, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "stopped");

    // The first control plane's API, natively (no talosctl): a stand-in apid at the node's
    // address from the cluster's record, behind mutual TLS with the cluster's own CA.
    let cluster_dir = host.path().join("var/lib/vmctl/talos").join(&name);
    let cp1 = c["nodes"][0]["ip"].as_str().unwrap();
    let node = StandInNode::start(&scratch, &cluster_dir, cp1);
    let out = vmctl_in_lab(
        &base,
        host.path(),
        &["cluster", "bootstrap", &name, "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let kubeconfig = cluster_dir.join("kubeconfig");
    assert!(!std::fs::read(&kubeconfig).unwrap().is_empty());
    assert_eq!(
        std::fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Again: an already bootstrapped cluster is fine.
    let out = vmctl_in_lab(&base, host.path(), &["cluster", "bootstrap", &name]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(node);

    // destroy: refused without --yes, then nothing is left behind.
    let out = vmctl_in_lab(&base, host.path(), &["cluster", "destroy", &name]);
    assert_eq!(out.status.code(), Some(2));
    let out = vmctl_in_lab(
        &base,
        host.path(),
        &["cluster", "destroy", &name, "--yes", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    for n in &nodes {
        assert!(
            !virsh(&["dominfo", n]).status.success(),
            "{n} still defined"
        );
        assert!(
            !host.path().join("vms").join(n).exists(),
            "{n} storage left"
        );
    }
    assert!(!host.path().join("var/lib/vmctl/talos").join(&name).exists());
    let book = std::fs::read_to_string(host.path().join("var/lib/vmctl/ip-reservations.json"))
        .unwrap_or_default();
    assert!(!book.contains(&name), "reservations left: {book}");
}
