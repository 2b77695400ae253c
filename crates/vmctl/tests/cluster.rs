//! `vmctl cluster` against libvirt's test driver, a fixture host root (the HGX H200 listing
//! with its NVSwitch lines removed: eight GPUs, each alone in its group), a local stand-in for
//! the Image Factory, a scanner that reports a fixed bridge, and a Talos API stand-in that
//! records its calls (no node, no root): what is made, where each GPU and address goes, that
//! every document validates, that a failure removes everything, and how nodes leave etcd.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::support::{TestHost, no_env, test_host_in};
use crate::talos_support::*;

use guest_media::cache::NoProgress;
use hostio::{HostRoot, SystemRunner};
use httpmock::MockServer;
use hypervisor::domain::parse::parse_domain;
use hypervisor::{Hypervisor, Libvirt};
use netscan::{Host, MacAddr, Scan, ScanMethod, ScanPlan, ScanRequest, ScanResult};
use talos_api::EtcdMember;
use vmctl::commands::Ctx;
use vmctl::commands::cluster::api::{Quiet, TalosApi};
use vmctl::commands::cluster::{self, ClusterRequest, NodeSize, ops};
use vmctl::config::Config;
use vmctl::talos::ClusterDir;
use vmctl::{Error, ExitKind};

/// A bridge br0 of 198.18.9.0/24 on which .1 (the host) and .2 answer.
struct FakeBridge;

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

impl Scan for FakeBridge {
    fn plan(&self, _: &ScanRequest) -> Result<ScanPlan, netscan::Error> {
        unreachable!("the cluster create scans, it does not plan")
    }
    fn scan(&self, req: &ScanRequest) -> Result<ScanResult, netscan::Error> {
        assert_eq!(req.interface, "br0");
        let subnet = "198.18.9.0/24".parse().unwrap();
        let used = vec![
            Host {
                ip: "198.18.9.1".parse().unwrap(),
                mac: mac("02:00:00:00:00:01"),
                vendor: None,
                local: true,
            },
            Host {
                ip: "198.18.9.2".parse().unwrap(),
                mac: mac("02:00:00:00:00:02"),
                vendor: None,
                local: false,
            },
        ];
        let taken = used.iter().map(|h| h.ip).collect();
        let (free, free_count) = netscan::free_ranges(subnet, &taken);
        Ok(ScanResult {
            interface: "br0".into(),
            subnet,
            local_ip: "198.18.9.1".parse().unwrap(),
            method: ScanMethod::Raw,
            fallback: false,
            used,
            conflicts: Vec::new(),
            free,
            free_count,
            probed: 253,
            packets_sent: 253,
            rate_pps: 2000,
            retries: 1,
            timeout_ms: 100,
            duration_ms: 1,
        })
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    _tree: tempfile::TempDir,
    host: HostRoot,
    config: Config,
    lv: Libvirt,
    _server: MockServer,
}

fn fixture() -> Fixture {
    let TestHost {
        dir,
        tree,
        host,
        mut config,
        lv,
    } = test_host_in(hgx_without_nvswitch());
    let server = factory(Some(fake_qcow2(dir.path(), "64M")));
    config.set("talos_factory_url", server.base_url());
    config.set("github_api_url", server.base_url());
    Fixture {
        dir,
        _tree: tree,
        host,
        config,
        lv,
        _server: server,
    }
}

impl Fixture {
    fn ctx(&self) -> Ctx<'_> {
        Ctx::new(&self.config, &self.host, &SystemRunner, &self.lv)
            .with_env(&no_env)
            .with_scanner(&FakeBridge)
    }
}

fn request(name: &str, cps: u32, gpu_workers: u32) -> ClusterRequest {
    let mut r = ClusterRequest::new(name);
    r.control_planes = cps;
    r.gpu_workers = Some(gpu_workers);
    r.bridge = Some("br0".into());
    r.gateway = Some("198.18.9.1".into());
    r.dns = vec!["198.18.9.1".into()];
    r.no_start = true;
    let small = NodeSize {
        cpus: 1,
        memory: "512".into(),
        disk: "1G".into(),
    };
    r.cp = small.clone();
    r.worker = small;
    r
}

/// A Talos API that answers from a script and records each call.
#[derive(Default)]
struct FakeApi {
    calls: RefCell<Vec<String>>,
    /// Bootstrap answers "not up yet" this many times first.
    unreachable_for: RefCell<u32>,
    members: RefCell<Vec<EtcdMember>>,
    /// These nodes refuse EtcdLeaveCluster (as a stopped node would).
    down: Vec<Ipv4Addr>,
}

fn member(id: u64, hostname: &str) -> EtcdMember {
    EtcdMember {
        id,
        hostname: hostname.into(),
        peer_urls: Vec::new(),
        client_urls: Vec::new(),
        is_learner: false,
    }
}

/// What a node that is not up yet answers: nothing listens on its port.
fn unreachable(node: Ipv4Addr) -> talos_api::Error {
    talos_api::Error::Connect {
        node: std::net::SocketAddr::new(node.into(), talos_api::APID_PORT),
        source: "connection refused".into(),
    }
}

impl TalosApi for FakeApi {
    fn bootstrap(&self, node: Ipv4Addr) -> Result<(), talos_api::Error> {
        self.calls.borrow_mut().push(format!("Bootstrap {node}"));
        let mut left = self.unreachable_for.borrow_mut();
        if *left > 0 {
            *left -= 1;
            return Err(unreachable(node));
        }
        Ok(())
    }
    fn kubeconfig(&self, node: Ipv4Addr) -> Result<Vec<u8>, talos_api::Error> {
        self.calls.borrow_mut().push(format!("Kubeconfig {node}"));
        Ok(b"apiVersion: v1\nkind: Config\n".to_vec())
    }
    fn etcd_members(&self, node: Ipv4Addr) -> Result<Vec<EtcdMember>, talos_api::Error> {
        self.calls
            .borrow_mut()
            .push(format!("EtcdMemberList {node}"));
        Ok(self.members.borrow().clone())
    }
    fn etcd_leave(&self, node: Ipv4Addr) -> Result<(), talos_api::Error> {
        self.calls
            .borrow_mut()
            .push(format!("EtcdLeaveCluster {node}"));
        if self.down.contains(&node) {
            return Err(unreachable(node));
        }
        Ok(())
    }
    fn etcd_remove(&self, node: Ipv4Addr, id: u64) -> Result<(), talos_api::Error> {
        self.calls
            .borrow_mut()
            .push(format!("EtcdRemoveMemberByID {node} {id}"));
        self.members.borrow_mut().retain(|m| m.id != id);
        Ok(())
    }
}

fn no_api(_: &ClusterDir) -> vmctl::Result<Box<dyn TalosApi>> {
    panic!("--no-start asks no Talos API")
}

fn ips(c: &cluster::ClusterCreated) -> Vec<Ipv4Addr> {
    c.nodes.iter().filter_map(|n| n.ip).collect()
}

#[test]
fn three_control_planes_and_two_gpu_workers_get_distinct_gpus_addresses_and_valid_configs() {
    let f = fixture();
    let ctx = f.ctx();
    let c = cluster::create(&ctx, &request("lab", 3, 2), &no_api, &NoProgress, &Quiet).unwrap();
    let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["lab-cp-1", "lab-cp-2", "lab-cp-3", "lab-gpu-1", "lab-gpu-2"]
    );
    assert!(!c.started && !c.bootstrapped);

    // Addresses: distinct, free on the scan (.1 and .2 answer), the VIP among them.
    let mut all = ips(&c);
    let vip = c.vip.unwrap();
    all.push(vip);
    let distinct: BTreeSet<Ipv4Addr> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 6, "{all:?}");
    for ip in &all {
        assert!(
            ip.octets()[..3] == [198, 18, 9] && ip.octets()[3] > 2,
            "{ip}"
        );
    }
    assert_eq!(c.endpoint, format!("https://{vip}:6443"));

    // GPUs: whole GPUs, one each, distinct; none on the control planes.
    let gpu_of = |n: &str| {
        let xml = f.lv.inactive_xml(n).unwrap();
        validate_domain_xml(f.dir.path(), &xml);
        parse_domain(&xml)
            .unwrap()
            .hostdevs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert!(gpu_of("lab-cp-1").is_empty() && gpu_of("lab-cp-3").is_empty());
    let (g1, g2) = (gpu_of("lab-gpu-1"), gpu_of("lab-gpu-2"));
    assert_eq!(g1.len(), 1);
    assert_eq!(g2.len(), 1);
    assert_ne!(g1, g2);
    assert_eq!(c.nodes[3].gpus, [g1[0].clone()]);

    // Every document of every node validates against its version's schema; the VIP is on the
    // control planes, the GPU label on the GPU workers, the manifests on the control planes.
    for n in &c.nodes {
        let seed = f.host.path("/vms").join(&n.name).join("seed.iso");
        let user_data = iso_file(&seed, "user-data");
        assert_valid_machine_config("v1.12", &user_data);
        let docs = yaml_docs(&user_data);
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        let cp = n.name.contains("-cp-");
        assert_eq!(kinds.contains(&"Layer2VIPConfig"), cp, "{}", n.name);
        assert_eq!(
            user_data.contains("nvidia-device-plugin"),
            cp,
            "{}: inline manifests",
            n.name
        );
        assert_eq!(
            docs[0]["machine"]["nodeLabels"]["nvidia.com/gpu.present"].as_str() == Some("true"),
            !n.gpus.is_empty(),
            "{}: the GPU label",
            n.name
        );
        assert!(user_data.contains(&format!("hostname: {}", n.name)));
    }

    // The record and the credentials: 0600, talosconfig endpoints are the control planes.
    let v = ops::show(&ctx, "lab").unwrap();
    assert_eq!(v.nodes.len(), 5);
    assert_eq!(v.state, "stopped");
    assert!(v.gpu);
    let tc = std::fs::read_to_string(&c.talosconfig).unwrap();
    for cp in &c.nodes[..3] {
        assert!(tc.contains(&cp.ip.unwrap().to_string()), "{tc}");
    }
    assert_eq!(ops::list(&ctx).unwrap().len(), 1);
    assert_eq!(ops::node_of(&ctx, "lab-gpu-2").as_deref(), Some("lab"));
    assert_eq!(ops::node_of(&ctx, "other"), None);
    assert!(
        c.next_steps
            .iter()
            .any(|s| s.argv.join(" ") == "vmctl cluster bootstrap lab --wait")
    );

    // Destroy: refused without --yes, then nothing is left.
    let err = ops::destroy(&ctx, "lab", false).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    let removed = ops::destroy(&ctx, "lab", true).unwrap();
    assert_eq!(removed.vms.len(), 5);
    assert_eq!(removed.addresses.len(), 6);
    for n in names {
        assert!(f.lv.get(n).unwrap().is_none(), "{n}");
        assert!(!f.host.path("/vms").join(n).exists(), "{n}");
    }
    assert!(!f.host.path("/var/lib/vmctl/talos/lab").exists());
    let book = std::fs::read_to_string(f.host.path("/var/lib/vmctl/ip-reservations.json"))
        .unwrap_or_default();
    for ip in &all {
        assert!(
            !book.contains(&format!("\"{ip}\"")),
            "{ip} still reserved: {book}"
        );
    }
}

#[test]
fn too_few_gpus_are_refused_naming_the_blockers_before_anything_is_made() {
    let f = fixture();
    let ctx = f.ctx();
    // The first GPU is held by another VM: only seven can go.
    let taken = cluster::create(&ctx, &request("one", 1, 1), &no_api, &NoProgress, &Quiet).unwrap();
    let held = taken.nodes[1].gpus[0].clone();
    let err = cluster::create(&ctx, &request("big", 1, 8), &no_api, &NoProgress, &Quiet)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    let msg = err.to_string();
    assert!(
        msg.contains("8 GPU worker(s)") && msg.contains("has 7"),
        "{msg}"
    );
    assert!(msg.contains(&held) && msg.contains("one-gpu-1"), "{msg}");
    assert!(!f.host.path("/var/lib/vmctl/talos/big").exists());
    assert!(f.lv.get("big-cp-1").unwrap().is_none());

    // A GPU named twice, and --gpu-workers disagreeing with the selectors.
    let mut r = request("two", 1, 2);
    r.worker_gpus = vec!["2a:00.0".into(), "0000:2a:00.0".into()];
    let err = cluster::create(&ctx, &r, &no_api, &NoProgress, &Quiet)
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("given to both"), "{err}");
    r.gpu_workers = Some(3);
    let err = cluster::create(&ctx, &r, &no_api, &NoProgress, &Quiet)
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("one per GPU worker"), "{err}");
    let mut r = request("even", 2, 0);
    r.gpu_workers = None;
    let err = cluster::create(&ctx, &r, &no_api, &NoProgress, &Quiet)
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("1, 3 or 5"), "{err}");
}

#[test]
fn a_failure_part_way_removes_every_node_and_the_cluster() {
    let f = fixture();
    let ctx = f.ctx();
    let mut r = request("half", 3, 1);
    // The workers' disk is smaller than the image: the GPU worker, made last, fails after the
    // three control planes exist.
    r.worker.disk = "16M".into();
    let err = cluster::create(&ctx, &r, &no_api, &NoProgress, &Quiet)
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("--disk"), "{err}");
    for n in ["half-cp-1", "half-cp-2", "half-cp-3", "half-gpu-1"] {
        assert!(f.lv.get(n).unwrap().is_none(), "{n}");
        assert!(!f.host.path("/vms").join(n).exists(), "{n}");
    }
    assert!(!f.host.path("/var/lib/vmctl/talos/half").exists());
    let book = std::fs::read_to_string(f.host.path("/var/lib/vmctl/ip-reservations.json"))
        .unwrap_or_default();
    assert!(!book.contains("half-"), "reservations released: {book}");
}

fn created_cluster(f: &Fixture, name: &str, cps: u32) -> (ClusterDir, vmctl::talos::ClusterRecord) {
    let ctx = f.ctx();
    let mut r = request(name, cps, 0);
    r.workers = 1;
    cluster::create(&ctx, &r, &no_api, &NoProgress, &Quiet).unwrap();
    ops::open(&ctx, name).unwrap()
}

#[test]
fn bootstrap_waits_for_the_api_and_writes_the_kubeconfig_private() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let ctx = f.ctx();
    let (dir, record) = created_cluster(&f, "boot", 1);
    let api = FakeApi {
        unreachable_for: RefCell::new(2),
        ..Default::default()
    };
    let cp = record.nodes[0].ip.unwrap();
    let path =
        cluster::create::bootstrap(&ctx, &dir, &record, &api, Duration::from_secs(60), &Quiet)
            .unwrap();
    assert_eq!(
        *api.calls.borrow(),
        [
            format!("Bootstrap {cp}"),
            format!("Bootstrap {cp}"),
            format!("Bootstrap {cp}"),
            format!("Kubeconfig {cp}"),
        ]
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"apiVersion: v1\nkind: Config\n"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // An API that never answers: the stage's timeout, naming it.
    let api = FakeApi {
        unreachable_for: RefCell::new(u32::MAX),
        ..Default::default()
    };
    let err =
        cluster::create::bootstrap(&ctx, &dir, &record, &api, Duration::ZERO, &Quiet).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Failure);
    assert!(
        err.to_string().contains("bootstrapping etcd on boot-cp-1"),
        "{err}"
    );
}

#[test]
fn a_control_plane_leaves_etcd_before_its_vm_goes() {
    let f = fixture();
    let ctx = f.ctx();
    let (_, record) = created_cluster(&f, "ha", 3);
    let ip = |n: &str| {
        record
            .nodes
            .iter()
            .find(|r| r.name == n)
            .unwrap()
            .ip
            .unwrap()
    };

    // It leaves by itself.
    let api = FakeApi::default();
    let r = ops::remove_node(&ctx, &api, "ha", "ha-cp-3", false).unwrap();
    assert_eq!(
        *api.calls.borrow(),
        [format!("EtcdLeaveCluster {}", ip("ha-cp-3"))]
    );
    assert_eq!(r.vms, ["ha-cp-3"]);
    assert!(f.lv.get("ha-cp-3").unwrap().is_none());
    assert_eq!(ops::show(&ctx, "ha").unwrap().nodes.len(), 3);

    // It cannot (stopped): another control plane removes its member by ID.
    let api = FakeApi {
        members: RefCell::new(vec![member(11, "ha-cp-1"), member(22, "ha-cp-2")]),
        down: vec![ip("ha-cp-2")],
        ..Default::default()
    };
    let r = ops::remove_node(&ctx, &api, "ha", "ha-cp-2", false).unwrap();
    assert_eq!(
        *api.calls.borrow(),
        [
            format!("EtcdLeaveCluster {}", ip("ha-cp-2")),
            format!("EtcdMemberList {}", ip("ha-cp-1")),
            format!("EtcdRemoveMemberByID {} 22", ip("ha-cp-1")),
        ]
    );
    assert!(
        r.etcd[0].contains("removed from etcd by ha-cp-1"),
        "{:?}",
        r.etcd
    );

    // The last control plane is refused; a worker goes without etcd; unknown nodes are refused.
    let err = ops::remove_node(&ctx, &api, "ha", "ha-cp-1", false).unwrap_err();
    assert!(err.to_string().contains("last control plane"), "{err}");
    let api = FakeApi::default();
    ops::remove_node(&ctx, &api, "ha", "ha-w-1", false).unwrap();
    assert!(api.calls.borrow().is_empty());
    let err = ops::remove_node(&ctx, &api, "ha", "nope", false).unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    let err: Error = ops::show(&ctx, "missing").unwrap_err();
    assert!(err.help().join(" ").contains("vmctl cluster list"));
}

#[test]
fn credentials_are_copied_private_and_never_over_a_file_without_force() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let ctx = f.ctx();
    created_cluster(&f, "cred", 1);
    let tc = ops::credential(&ctx, "cred", ops::Credential::Talosconfig, None, false).unwrap();
    assert_eq!(tc, f.host.path("/var/lib/vmctl/talos/cred/talosconfig"));
    let out: PathBuf = f.dir.path().join("tc");
    ops::credential(
        &ctx,
        "cred",
        ops::Credential::Talosconfig,
        Some(&out),
        false,
    )
    .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&tc).unwrap());
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let err = ops::credential(
        &ctx,
        "cred",
        ops::Credential::Talosconfig,
        Some(&out),
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    ops::credential(&ctx, "cred", ops::Credential::Talosconfig, Some(&out), true).unwrap();
    // No kubeconfig before the bootstrap.
    let err = ops::credential(&ctx, "cred", ops::Credential::Kubeconfig, None, false).unwrap_err();
    assert!(err.to_string().contains("kubeconfig"), "{err}");
}

#[test]
fn gpu_workers_of_an_nvswitch_host_are_refused_before_any_node_is_made() {
    // One GPU per worker on an HGX host without Shared NVSwitch multitenancy: no NVLink fabric.
    let TestHost {
        dir,
        tree,
        host,
        mut config,
        lv,
    } = test_host_in(fixture_builder::build_host("hgx-h200x8-nvswitch"));
    let server = factory(Some(fake_qcow2(dir.path(), "64M")));
    config.set("talos_factory_url", server.base_url());
    config.set("github_api_url", server.base_url());
    let f = Fixture {
        dir,
        _tree: tree,
        host,
        config,
        lv,
        _server: server,
    };
    let ctx = f.ctx();
    let err = cluster::create(&ctx, &request("hgx", 1, 2), &no_api, &NoProgress, &Quiet)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.exit_kind(), ExitKind::Usage);
    assert!(err.to_string().contains("NVLink/NVSwitch fabric"), "{err}");
    assert!(!f.host.path("/var/lib/vmctl/talos/hgx").exists());
    assert!(f.lv.get("hgx-cp-1").unwrap().is_none());
}
