//! `vmctl create talos` against libvirt's test driver, a fixture host root and a local stand-in
//! for the Image Factory and GitHub (no internet, no root): the seed's `user-data` is exactly the
//! node's generated config, the domain XML validates, clusters are reused or refused, and a
//! failed create leaves nothing behind. `--iso`: the metal ISO boots after a blank disk, with the
//! config on a `metal-iso` volume.

use crate::talos_support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::support::{TestHost, no_env, test_host};

use guest_media::cache::NoProgress;
use hostio::{HostRoot, SystemRunner};
use httpmock::MockServer;
use hypervisor::domain::parse::parse_domain;
use hypervisor::{Hypervisor, Libvirt};
use talos_image::machineconfig::{self, NodePatch, Role};
use talos_image::{ConfigInput, Endpoints, Schematic, SecretsBundle, TalosVersion};
use talos_support::*;
use vmctl::commands::Ctx;
use vmctl::commands::create::NetworkRequest;
use vmctl::commands::create::talos::{Media, TalosCreated, TalosRequest, create_talos};
use vmctl::config::Config;
use vmctl::{Error, ExitKind};

struct Fixture {
    dir: tempfile::TempDir,
    _tree: tempfile::TempDir,
    host: HostRoot,
    config: Config,
    lv: Libvirt,
    server: MockServer,
}

/// A fixture host with bridge br0, a private test-driver node, and the mock factory.
fn fixture(host_name: &str) -> Fixture {
    let TestHost {
        dir,
        tree,
        host,
        mut config,
        lv,
    } = test_host(host_name);
    let server = factory(Some(fake_qcow2(dir.path(), "64M")));
    config.set("talos_factory_url", server.base_url());
    config.set("github_api_url", server.base_url());
    Fixture {
        dir,
        _tree: tree,
        host,
        config,
        lv,
        server,
    }
}

fn request(name: &str, ip: Option<&str>) -> TalosRequest {
    let mut r = TalosRequest::new(name);
    r.bridge = Some("br0".into());
    r.no_start = true;
    r.disk = Some("1G".into());
    if let Some(ip) = ip {
        r.network = NetworkRequest::Static {
            ip: ip.into(),
            gateway: Some("198.18.7.1".into()),
            dns: vec!["198.18.7.1".into()],
        };
    }
    r
}

fn create(f: &Fixture, r: &TalosRequest) -> vmctl::Result<TalosCreated> {
    let ctx = Ctx::new(&f.config, &f.host, &SystemRunner, &f.lv).with_env(&no_env);
    create_talos(&ctx, r, &NoProgress)
}

fn cluster_dir(f: &Fixture, cluster: &str) -> PathBuf {
    f.host.path("/var/lib/vmctl/talos").join(cluster)
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn nothing_left(f: &Fixture, name: &str) {
    assert!(f.lv.get(name).unwrap().is_none());
    assert!(!f.host.path("/vms").join(name).exists());
}

/// The config `create talos` must have put in the seed, rendered again from the stored secrets.
fn expected_user_data(
    f: &Fixture,
    c: &TalosCreated,
    role: Role,
    gpu: bool,
    gateway: Option<&str>,
) -> String {
    let secrets = SecretsBundle::from_yaml(
        &std::fs::read_to_string(c.cluster_dir.join("secrets.yaml")).unwrap(),
    )
    .unwrap();
    let version = TalosVersion::parse(LATEST).unwrap();
    let ep = Endpoints::new(&f.server.base_url(), &f.server.base_url());
    let mut input = ConfigInput::new(&c.cluster, &c.endpoint, version.clone());
    input.installer_image =
        ep.installer_image(c.media.platform(), &c.schematic_id, &version, false);
    let patch = NodePatch {
        hostname: Some(c.name.clone()),
        static_ip: c.ip.as_ref().map(|ip| machineconfig::StaticIp {
            mac: c.mac.clone(),
            address: ip.parse().unwrap(),
            gateway: gateway.map(|g| g.parse().unwrap()),
            nameservers: gateway.iter().map(|g| g.parse().unwrap()).collect(),
        }),
        gpu,
        labels: if gpu {
            let (k, v) = talos_image::nvidia::GPU_NODE_LABEL;
            [(k.to_string(), v.to_string())].into()
        } else {
            Default::default()
        },
        ..Default::default()
    };
    if !c.inline_manifests.is_empty() {
        input.inline_manifests = talos_image::nvidia::inline_manifests().unwrap();
    }
    machineconfig::node_config(&input, &secrets, role, &patch).unwrap()
}

#[test]
fn controlplane_seed_holds_the_generated_config_and_the_domain_validates() {
    let f = fixture("intel-z370-no-nvidia");
    let mut r = request("cp1", Some("198.18.7.10/24"));
    r.mac = Some("52:54:00:07:00:10".into());
    let c = create(&f, &r).unwrap();
    assert!(c.defined && !c.started && c.new_cluster);
    assert_eq!(
        c.version.to_string(),
        LATEST,
        "latest stable, not the beta or the draft"
    );
    assert_eq!(c.endpoint, "https://198.18.7.10:6443");
    let guest_agent_only = Schematic::with_extensions(["siderolabs/qemu-guest-agent"]);
    assert_eq!(c.schematic_id, guest_agent_only.id().unwrap().id);
    assert!(c.image_url.ends_with(&format!(
        "/image/{}/{LATEST}/nocloud-amd64.qcow2",
        c.schematic_id
    )));
    assert_eq!(
        c.installer_image,
        format!(
            "{}/nocloud-installer/{}:{LATEST}",
            f.server.base_url().trim_start_matches("http://"),
            c.schematic_id
        )
    );

    // The seed: a cidata volume whose user-data is exactly the node's machine config.
    assert_eq!(iso_label(&c.seed), "cidata");
    let user_data = iso_file(&c.seed, "user-data");
    assert_eq!(
        user_data,
        expected_user_data(&f, &c, Role::Controlplane, false, Some("198.18.7.1"))
    );
    let docs = yaml_docs(&user_data);
    assert_eq!(docs[0]["machine"]["type"], "controlplane");
    assert!(user_data.contains("198.18.7.10/24"), "{user_data}");
    assert!(user_data.contains("52:54:00:07:00:10"), "{user_data}");
    assert!(user_data.contains("cp1"), "hostname: {user_data}");
    assert!(!user_data.contains("nvidia"), "no GPU, no modules");
    let meta = iso_file(&c.seed, "meta-data");
    assert!(meta.contains("local-hostname: \"cp1\""), "{meta}");
    let net = iso_file(&c.seed, "network-config");
    assert!(
        net.contains("52:54:00:07:00:10") && net.contains("198.18.7.10/24"),
        "{net}"
    );

    // The domain: q35, UEFI, virtio disk + seed, the bridge and MAC, vmctl metadata.
    let xml = f.lv.inactive_xml("cp1").unwrap();
    validate_domain_xml(f.dir.path(), &xml);
    let facts = parse_domain(&xml).unwrap();
    assert_eq!(facts.firmware, "efi");
    assert_eq!(facts.machine.as_deref(), Some("q35"));
    assert_eq!(facts.nics[0].mac.as_deref(), Some("52:54:00:07:00:10"));
    assert_eq!(facts.nics[0].source.as_deref(), Some("br0"));
    assert!(facts.hostdevs.is_empty());
    let m = facts.metadata.unwrap();
    assert_eq!(m.os, "talos");
    assert_eq!(m.release.as_deref(), Some(LATEST));
    assert_eq!(m.ip.as_deref(), Some("198.18.7.10/24"));
    assert_eq!(m.base_sha256.as_deref(), Some(c.base_sha256.as_str()));

    // The cluster's state: secrets, record, talosconfig, all 0600.
    let dir = cluster_dir(&f, "cp1");
    assert_eq!(c.cluster_dir, dir);
    for name in ["secrets.yaml", "cluster.json", "talosconfig"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    let tc = std::fs::read_to_string(dir.join("talosconfig")).unwrap();
    assert!(tc.contains("198.18.7.10"), "{tc}");
    assert!(
        c.next_steps
            .iter()
            .any(|s| s.argv.contains(&"bootstrap".to_string()))
    );
}

#[test]
fn workers_join_with_the_clusters_secrets_and_clashes_are_refused() {
    let f = fixture("intel-z370-no-nvidia");
    let cp = create(&f, &request("cp1", Some("198.18.7.10/24"))).unwrap();

    // The same VM again.
    let err = create(&f, &request("cp1", Some("198.18.7.12/24")))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, Error::NameTaken { .. }), "{err}");
    // A new VM whose name matches an existing cluster.
    std::fs::create_dir_all(cluster_dir(&f, "w0")).unwrap();
    let err = create(&f, &request("w0", Some("198.18.7.13/24")))
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Talos cluster \"w0\" already exists"),
        "{err}"
    );
    assert!(
        err.help().iter().any(|h| h.contains("--cluster w0")),
        "{:?}",
        err.help()
    );
    std::fs::remove_dir(cluster_dir(&f, "w0")).unwrap();

    // A worker of an unknown cluster.
    let mut w = request("w1", Some("198.18.7.20/24"));
    w.role = Role::Worker;
    w.cluster = Some("nope".into());
    let err = create(&f, &w).map(|_| ()).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert!(
        err.to_string().contains("no Talos cluster \"nope\""),
        "{err}"
    );
    nothing_left(&f, "w1");

    // The cluster's address is taken by cp1.
    let mut w = request("w1", Some("198.18.7.10/24"));
    w.role = Role::Worker;
    w.cluster = Some("cp1".into());
    let err = create(&f, &w).map(|_| ()).unwrap_err();
    assert!(matches!(err, Error::IpInUse { .. }), "{err}");
    nothing_left(&f, "w1");

    // A worker joins: same secrets, the cluster's endpoint and version.
    let mut w = request("w1", Some("198.18.7.20/24"));
    w.role = Role::Worker;
    w.cluster = Some("cp1".into());
    let before = std::fs::read(cluster_dir(&f, "cp1").join("secrets.yaml")).unwrap();
    let c = create(&f, &w).unwrap();
    assert!(!c.new_cluster);
    assert_eq!(c.endpoint, cp.endpoint);
    assert_eq!(
        std::fs::read(cluster_dir(&f, "cp1").join("secrets.yaml")).unwrap(),
        before,
        "secrets are reused, never regenerated"
    );
    let user_data = iso_file(&c.seed, "user-data");
    assert_eq!(
        user_data,
        expected_user_data(&f, &c, Role::Worker, false, Some("198.18.7.1"))
    );
    assert_eq!(yaml_docs(&user_data)[0]["machine"]["type"], "worker");
    assert!(
        !c.next_steps
            .iter()
            .any(|s| s.argv.contains(&"bootstrap".to_string()))
    );
}

#[test]
fn gpu_node_gets_the_nvidia_schematic_modules_and_hostdevs() {
    let f = fixture("synthetic-vfio-bound");
    let mut r = request("gpu1", Some("198.18.7.30/24"));
    r.gpus = vec!["01:00.0".into()];
    let c = create(&f, &r).unwrap();
    assert_eq!(
        c.extensions,
        [
            "siderolabs/nvidia-open-gpu-kernel-modules-production",
            "siderolabs/nvidia-container-toolkit-production",
            "siderolabs/qemu-guest-agent",
        ],
        "GA102 is Turing or newer: open modules"
    );
    assert_eq!(
        c.schematic_id,
        Schematic::with_extensions(c.extensions.clone())
            .id()
            .unwrap()
            .id
    );
    let user_data = iso_file(&c.seed, "user-data");
    assert_eq!(
        user_data,
        expected_user_data(&f, &c, Role::Controlplane, true, Some("198.18.7.1"))
    );
    assert!(user_data.contains("nvidia_uvm") && user_data.contains("bpf_jit_harden"));
    let xml = f.lv.inactive_xml("gpu1").unwrap();
    validate_domain_xml(f.dir.path(), &xml);
    let facts = parse_domain(&xml).unwrap();
    let hostdevs: Vec<String> = facts.hostdevs.iter().map(ToString::to_string).collect();
    assert_eq!(hostdevs, ["0000:01:00.0", "0000:01:00.1"]);
    assert_eq!(facts.firmware, "efi");
    // A new cluster whose first node has a GPU carries the NVIDIA manifests itself: nothing is
    // left to apply by hand.
    assert_eq!(
        c.inline_manifests,
        ["nvidia-runtimeclass", "nvidia-device-plugin"]
    );
    assert!(c.runtime_class.is_none());
    assert!(c.next_steps.iter().all(|s| s.argv[0] != "kubectl"));
    assert!(user_data.contains("nvidia.com/gpu.present"));

    // --driver proprietary wins over the detection.
    let mut r = request("gpu2", Some("198.18.7.31/24"));
    r.cluster = Some("other".into());
    r.gpus = vec!["01:00.0".into()];
    r.gpu_force = true;
    r.driver = Some(talos_image::Driver::Proprietary);
    // The GPU is gpu1's: refused even though the schematic would differ.
    let err = create(&f, &r).map(|_| ()).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert!(
        !cluster_dir(&f, "other").exists(),
        "refusal made no cluster"
    );
}

#[test]
fn bad_versions_and_extensions_are_refused_before_anything_is_made() {
    let f = fixture("intel-z370-no-nvidia");
    let cases: [(&str, Option<&str>, bool, &str); 3] = [
        ("v1", Some("v1.9.99"), false, "is not a published release"),
        ("v2", Some("v1.13.0-beta.0"), false, "is a pre-release"),
        ("v3", Some("v1.14.0"), false, "is not a published release"),
    ];
    for (name, version, allow, msg) in cases {
        let mut r = request(name, Some("198.18.7.40/24"));
        r.version = version.map(String::from);
        r.allow_prerelease = allow;
        let err = create(&f, &r).map(|_| ()).unwrap_err();
        assert_eq!(err.exit_kind(), ExitKind::Usage, "{err}");
        assert!(err.to_string().contains(msg), "{err}");
        assert!(!err.help().is_empty());
        nothing_left(&f, name);
        assert!(!cluster_dir(&f, name).exists());
    }
    // An unknown extension, checked online.
    let mut r = request("v4", Some("198.18.7.40/24"));
    r.extensions = vec!["siderolabs/no-such-extension".into()];
    r.online = true;
    let err = create(&f, &r).map(|_| ()).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert!(err.to_string().contains("no-such-extension"), "{err}");
    nothing_left(&f, "v4");
    // Online: the factory's list knows the extension and its ID agrees with the offline one.
    let id = accept_schematic(
        &f.server,
        &Schematic::with_extensions(["siderolabs/qemu-guest-agent", "siderolabs/iscsi-tools"]),
    );
    let mut r = request("v4b", Some("198.18.7.42/24"));
    r.extensions = vec!["iscsi-tools".into()];
    r.online = true;
    assert_eq!(create(&f, &r).unwrap().schematic_id, id);
    // A pre-release with --allow-prerelease is fine.
    let mut r = request("v5", Some("198.18.7.41/24"));
    r.version = Some("v1.13.0-beta.0".into());
    r.allow_prerelease = true;
    assert_eq!(
        create(&f, &r).unwrap().version.to_string(),
        "v1.13.0-beta.0"
    );
    // A cluster name that is not a DNS label.
    let mut r = request("v8", Some("198.18.7.43/24"));
    r.cluster = Some("Bad_Name".into());
    let err = create(&f, &r).map(|_| ()).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert!(err.to_string().contains("cluster name"), "{err}");
    assert!(err.help()[0].contains("DNS labels"), "{:?}", err.help());
    // A new cluster needs an endpoint; a bad --endpoint is refused.
    let err = create(&f, &request("v6", None)).map(|_| ()).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert!(
        err.to_string().contains("needs a Kubernetes API endpoint"),
        "{err}"
    );
    let mut r = request("v7", None);
    r.endpoint = Some("198.18.7.50:6443".into());
    let err = create(&f, &r).map(|_| ()).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert!(err.to_string().contains("not an https:// URL"), "{err}");
}

#[test]
fn failed_image_download_rolls_back_the_new_cluster() {
    let f = fixture("intel-z370-no-nvidia");
    // A version whose image the factory does not have (neither qcow2 nor raw.xz).
    let mut r = request("gone", Some("198.18.7.60/24"));
    r.version = Some("v1.10.7".into());
    let server = factory(None);
    let mut config = f.config.clone();
    config.set("talos_factory_url", server.base_url());
    config.set("github_api_url", server.base_url());
    let ctx = Ctx::new(&config, &f.host, &SystemRunner, &f.lv).with_env(&no_env);
    let err = create_talos(&ctx, &r, &NoProgress).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    nothing_left(&f, "gone");
    assert!(
        !cluster_dir(&f, "gone").exists(),
        "the new cluster's secrets are removed"
    );
}

#[test]
fn raw_xz_image_is_decompressed_when_there_is_no_qcow2() {
    let f = fixture("intel-z370-no-nvidia");
    let server = factory(None);
    // A raw disk, xz-compressed by the xz tool.
    let raw = f.dir.path().join("disk.raw");
    std::fs::write(&raw, vec![0u8; 4 << 20]).unwrap();
    let st = std::process::Command::new("xz")
        .args(["-k", "-0"])
        .arg(&raw)
        .status()
        .unwrap();
    assert!(st.success());
    let xz = std::fs::read(f.dir.path().join("disk.raw.xz")).unwrap();
    server.mock(|when, then| {
        when.method(httpmock::Method::GET)
            .path_matches(r"^/image/[0-9a-f]{64}/v[^/]+/nocloud-amd64\.raw\.xz$");
        then.status(200).body(xz);
    });
    let mut config = f.config.clone();
    config.set("talos_factory_url", server.base_url());
    config.set("github_api_url", server.base_url());
    let ctx = Ctx::new(&config, &f.host, &SystemRunner, &f.lv).with_env(&no_env);
    let c = create_talos(&ctx, &request("xz1", Some("198.18.7.70/24")), &NoProgress).unwrap();
    assert!(c.image_url.ends_with("nocloud-amd64.raw.xz"));
    assert_eq!(std::fs::read(&c.base_image).unwrap().len(), 4 << 20);
    assert!(
        c.base_image
            .to_string_lossy()
            .ends_with("nocloud-amd64.raw")
    );
}

#[test]
fn bootstrap_is_refused_for_a_node_that_is_not_started_or_not_first() {
    let f = fixture("intel-z370-no-nvidia");
    let ctx = Ctx::new(&f.config, &f.host, &SystemRunner, &f.lv).with_env(&no_env);
    let mut r = request("boot1", Some("198.18.7.80/24"));
    r.bootstrap = true;
    // --bootstrap needs a started VM.
    let err = create_talos(&ctx, &r, &NoProgress).map(|_| ()).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert!(err.to_string().contains("--bootstrap needs"), "{err}");
    nothing_left(&f, "boot1");
}

#[test]
fn a_cluster_started_concurrently_is_refused_and_left_alone() {
    let f = fixture("intel-z370-no-nvidia");
    let ctx = Ctx::new(&f.config, &f.host, &SystemRunner, &f.lv).with_env(&no_env);
    let r = request("race", Some("198.18.7.90/24"));
    let plan = vmctl::commands::create::talos::plan(&ctx, &r).unwrap();
    // Another create starts the same cluster between this one's checks and its writes.
    let dir = cluster_dir(&f, "race");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secrets.yaml"), "theirs").unwrap();
    let err = vmctl::commands::create::talos::apply(&ctx, &r, &plan, &NoProgress)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("secrets.yaml")).unwrap(),
        "theirs"
    );
    nothing_left(&f, "race");
}

/// Fails `genisoimage` (the seed), runs everything else.
struct NoSeed;

impl hostio::CommandRunner for NoSeed {
    fn output(&self, cmd: &hostio::Cmd) -> Result<hostio::Output, hostio::CommandError> {
        if cmd.argv[0] == "genisoimage" {
            return Ok(hostio::Output::failed(1, "no space left on device"));
        }
        SystemRunner.output(cmd)
    }
}

#[test]
fn a_failure_after_the_secrets_removes_the_new_cluster_and_the_vm_files() {
    let f = fixture("intel-z370-no-nvidia");
    let ctx = Ctx::new(&f.config, &f.host, &NoSeed, &f.lv).with_env(&no_env);
    let err = create_talos(
        &ctx,
        &request("noseed", Some("198.18.7.91/24")),
        &NoProgress,
    )
    .map(|_| ())
    .unwrap_err();
    assert!(
        matches!(err, Error::Media(guest_media::Error::WriteSeed { .. })),
        "{err:?}"
    );
    nothing_left(&f, "noseed");
    assert!(!cluster_dir(&f, "noseed").exists(), "new cluster removed");
}

#[test]
fn iso_node_installs_from_the_metal_iso_with_its_config_on_a_metal_iso_volume() {
    let f = fixture("intel-z370-no-nvidia");
    let iso_bytes = fake_iso(f.dir.path());
    let iso_mock = serve_metal_iso(&f.server, iso_bytes.clone());
    let mut r = request("iso1", Some("198.18.7.80/24"));
    r.mac = Some("52:54:00:07:00:80".into());
    r.iso = true;
    let c = create(&f, &r).unwrap();
    assert!(c.defined && !c.started);

    // The schematic carries the kernel argument (a factory ISO takes none at boot), so its ID
    // is not the nocloud one, and the installer is the metal installer of that schematic.
    let nocloud = Schematic::with_extensions(["siderolabs/qemu-guest-agent"]);
    let mut with_arg = nocloud.clone();
    with_arg
        .customization
        .extra_kernel_args
        .push("talos.config=metal-iso".into());
    assert_eq!(c.schematic_id, with_arg.id().unwrap().id);
    assert_ne!(c.schematic_id, nocloud.id().unwrap().id);
    assert_eq!(c.kernel_args, ["talos.config=metal-iso"]);
    assert_eq!(c.media, Media::MetalIso);
    assert_eq!(c.image_kind, talos_image::ImageKind::MetalIso);
    assert!(
        c.image_url.ends_with(&format!(
            "/image/{}/{LATEST}/metal-amd64.iso",
            c.schematic_id
        )),
        "{}",
        c.image_url
    );
    assert_eq!(
        c.installer_image,
        format!(
            "{}/metal-installer/{}:{LATEST}",
            f.server.base_url().trim_start_matches("http://"),
            c.schematic_id
        )
    );
    // The ISO itself, cached by content with its sha256 recorded at this first download.
    assert_eq!(std::fs::read(&c.base_image).unwrap(), iso_bytes);
    assert_eq!(
        c.verification.basis,
        guest_media::cache::Basis::RecordedFirst
    );
    iso_mock.assert_calls(1);

    // The config volume: labelled metal-iso, config.yaml = the node's machine config, which
    // names the metal installer and validates against the official 1.12 schema.
    assert_eq!(c.seed_label, "metal-iso");
    assert_eq!(iso_label(&c.seed), "metal-iso");
    assert_eq!(blkid_label(&c.seed), "metal-iso");
    let config = iso_file(&c.seed, "config.yaml");
    assert_eq!(
        config,
        expected_user_data(&f, &c, Role::Controlplane, false, Some("198.18.7.1"))
    );
    assert!(config.contains(&c.installer_image), "{config}");
    assert!(config.contains("198.18.7.80/24") && config.contains("52:54:00:07:00:80"));
    assert_valid_machine_config("v1.12", &config);

    // The system disk is blank (no backing image) and of --disk size.
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&c.disk)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["virtual-size"], 1u64 << 30);
    assert!(info.get("backing-filename").is_none(), "{info}");

    // The domain: disk first, then the Talos ISO; the config volume a second, unbootable cdrom.
    let xml = f.lv.inactive_xml("iso1").unwrap();
    validate_domain_xml(f.dir.path(), &xml);
    assert_eq!(
        boot_orders(&xml),
        [
            ("vda".to_string(), Some(1)),
            ("sda".to_string(), Some(2)),
            ("sdb".to_string(), None)
        ]
    );
    assert!(!xml.contains("<boot dev="), "{xml}");
    let facts = parse_domain(&xml).unwrap();
    let by_target = |t: &str| facts.disks.iter().find(|d| d.target == t).unwrap();
    assert_eq!(by_target("sda").device, "cdrom");
    assert!(by_target("sda").readonly);
    assert_eq!(
        by_target("sda").path.as_deref(),
        Some(c.base_image.as_path())
    );
    assert_eq!(by_target("sdb").device, "cdrom");
    assert_eq!(by_target("sdb").path.as_deref(), Some(c.seed.as_path()));
    assert_eq!(facts.firmware, "efi");
    assert_eq!(facts.nics[0].mac.as_deref(), Some("52:54:00:07:00:80"));
    let m = facts.metadata.unwrap();
    assert_eq!(m.base_image.as_deref(), Some(c.base_image.as_path()));
    assert_eq!(m.disks, [c.disk.clone(), c.seed.clone()]);
    let order: Vec<_> = c
        .boot_order
        .iter()
        .map(|b| (b.order, b.target.as_str()))
        .collect();
    assert_eq!(order, [(1, "vda"), (2, "sda")]);

    // A second ISO node of the same schematic: the cached ISO is verified against the record.
    let mut r2 = request("iso2", Some("198.18.7.81/24"));
    r2.iso = true;
    let c2 = create(&f, &r2).unwrap();
    assert_eq!(
        c2.verification.basis,
        guest_media::cache::Basis::MatchedRecord
    );
    assert_eq!(c2.base_image, c.base_image);

    // Deleting a node removes its disk and config volume, never the cached ISO.
    let ctx = Ctx::new(&f.config, &f.host, &SystemRunner, &f.lv).with_env(&no_env);
    let d = vmctl::commands::lifecycle::delete(&ctx, "iso1", true, false).unwrap();
    assert!(
        d.removed.contains(&c.disk) && d.removed.contains(&c.seed),
        "{d:?}"
    );
    assert!(c.base_image.exists());
    nothing_left(&f, "iso1");
}

#[test]
fn iso_refusals_leave_nothing_behind() {
    let f = fixture("intel-z370-no-nvidia");
    let mut iso_mock = serve_metal_iso(&f.server, fake_iso(f.dir.path()));
    // Bad input is refused before the download, with exit 2.
    let mut r = request("iso3", Some("198.18.7.90/24"));
    r.iso = true;
    r.disk = Some("lots".into());
    let err = create(&f, &r).map(|_| ()).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage, "{err}");
    iso_mock.assert_calls(0);
    nothing_left(&f, "iso3");
    assert!(!cluster_dir(&f, "iso3").exists());

    // A factory without the ISO: the failure rolls back the new cluster and the VM's files.
    iso_mock.delete();
    let mut r = request("iso4", Some("198.18.7.91/24"));
    r.iso = true;
    let err = create(&f, &r).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("metal-amd64.iso"), "{err}");
    nothing_left(&f, "iso4");
    assert!(!cluster_dir(&f, "iso4").exists());
}

/// The node's disk and seed (the seed holds the cluster CA keys, the cluster secret and the
/// bootstrap token) and the cluster's secrets, record and talosconfig: none readable, no
/// directory listable by another local user.
#[test]
#[ignore = "lab: needs root (reads the files as user nobody); run with GVB_LAB=1 and --include-ignored"]
fn talos_node_storage_and_secrets_are_unreadable_by_other_users() {
    let f = fixture("intel-z370-no-nvidia");
    crate::storage::open_up(f.dir.path());
    crate::storage::open_up(f.host.root());
    let c = create(&f, &request("sec-talos", Some("198.18.7.123/24"))).unwrap();
    crate::storage::assert_private_to_others(&f.host.path("/vms"), true);
    for p in [&c.seed, &c.disk] {
        assert_eq!(format!("{:o}", mode(p)), "600", "{}", p.display());
    }
    // The cluster's state is vmctl's alone: qemu never opens it.
    crate::storage::assert_private_to_others(&f.host.path("/var/lib/vmctl/talos"), false);
}

#[test]
fn hgx_node_with_every_gpu_gets_the_nvswitches_and_the_fabric_manager() {
    let f = fixture("hgx-h200x8-nvswitch");
    let mut r = request("hgx-node", Some("198.18.7.40/24"));
    r.gpus = vec!["all".into()];
    let c = create(&f, &r).unwrap();
    assert!(
        c.extensions
            .contains(&"siderolabs/nvidia-fabricmanager-production".to_string()),
        "{:?}",
        c.extensions
    );
    let xml = f.lv.inactive_xml("hgx-node").unwrap();
    validate_domain_xml(f.dir.path(), &xml);
    let d = parse_domain(&xml).unwrap();
    assert_eq!(d.hostdevs.len(), 12, "8 GPUs + 4 NVSwitches");
    assert!(d.hostdevs.iter().any(|h| h.to_string() == "0000:08:00.0"));
    // The cluster record lists the node's GPUs, not the switches.
    assert_eq!(c.gpus.len(), 8, "{:?}", c.gpus);
}

#[test]
fn talos_node_without_the_switches_never_gets_the_fabric_manager() {
    // Shared NVSwitch multitenancy: one GPU, no switch, no fabric manager.
    let f = fixture("synthetic-hgx-shared-nvswitch");
    let mut r = request("hgx-shared", Some("198.18.7.41/24"));
    r.gpus = vec!["2".into()];
    let c = create(&f, &r).unwrap();
    assert!(
        !c.extensions.iter().any(|e| e.contains("fabricmanager")),
        "{:?}",
        c.extensions
    );
    let d = parse_domain(&f.lv.inactive_xml("hgx-shared").unwrap()).unwrap();
    assert_eq!(d.hostdevs.len(), 1);

    // Forced partial passthrough on a plain HGX host: no switches, so no fabric manager either.
    let f = fixture("hgx-h200x8-nvswitch");
    let mut r = request("hgx-forced", Some("198.18.7.42/24"));
    r.gpus = vec!["0".into()];
    let err = create(&f, &r).map(|_| ()).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert!(err.to_string().contains("NVLink/NVSwitch fabric"), "{err}");
    r.gpu_force = true;
    let c = create(&f, &r).unwrap();
    assert!(!c.extensions.iter().any(|e| e.contains("fabricmanager")));
}
