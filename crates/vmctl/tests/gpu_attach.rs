//! `vmctl gpu attach/detach` against libvirt's in-process test driver (a private node file per
//! test) on fixture hosts. The test driver has no device hot-plug, so
//! live operations go through a recording wrapper; config changes are real redefinitions.

use std::cell::RefCell;

use hostio::{HostRoot, RecordingRunner};
use hypervisor::domain::parse::parse_domain;
use hypervisor::{DomainRecord, GuestAddress, Hypervisor, Libvirt, State};
use passthrough::{FakeKernel, Selector, SysfsWrite, SysfsWriter};
use vmctl::commands::Ctx;
use vmctl::commands::gpu::{
    self, AttachOutcome, AttachRequest, DetachOutcome, DetachRequest, Rebind, Scope,
};
use vmctl::config::Config;

/// A private test-driver node (a `test:///default` connection would share its state with the
/// other tests of this process): `off`, `off2` and `pc` (an i440fx machine) are shut off, `on`
/// runs; all persistent, without devices.
fn private_libvirt(dir: &std::path::Path) -> Libvirt {
    let p = dir.join("node.xml");
    let dom = |name: &str, n: u8, runstate: &str| {
        let (machine, root) = if name == "pc" {
            ("pc", "<controller type='pci' index='0' model='pci-root'/>")
        } else {
            (
                "q35",
                "<controller type='pci' index='0' model='pcie-root'/>",
            )
        };
        format!(
            "  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>{name}</name>
    <uuid>6b5a8e02-0000-4000-8000-0000000000{n:02x}</uuid>
    <memory unit='KiB'>1048576</memory>
    <os>
      <type arch='x86_64' machine='{machine}'>hvm</type>
    </os>
    <devices>
      {root}
    </devices>
    {runstate}
  </domain>
"
        )
    };
    let node = format!(
        "<node>\n{}{}{}{}</node>\n",
        dom("off", 1, "<test:runstate>5</test:runstate>"),
        dom("off2", 2, "<test:runstate>5</test:runstate>"),
        dom("on", 3, ""),
        dom("pc", 4, "<test:runstate>5</test:runstate>"),
    );
    std::fs::write(&p, node).unwrap();
    Libvirt::open(&format!("test://{}", p.display())).unwrap()
}

use crate::support::no_env;

/// `gpu attach` with a context on `host` and `hv` (the runner is never used on a fixture root).
fn attach(
    host: &HostRoot,
    hv: &dyn Hypervisor,
    req: &AttachRequest,
) -> vmctl::Result<AttachOutcome> {
    let config = Config::defaults();
    let runner = RecordingRunner::new();
    let ctx = Ctx::new(&config, host, &runner, hv).with_env(&no_env);
    gpu::attach(&ctx, req)
}

fn detach(
    host: &HostRoot,
    hv: &dyn Hypervisor,
    sysfs: &dyn SysfsWriter,
    req: &DetachRequest,
) -> vmctl::Result<DetachOutcome> {
    let config = Config::defaults();
    let runner = RecordingRunner::new();
    let ctx = Ctx::new(&config, host, &runner, hv).with_env(&no_env);
    gpu::detach(&ctx, sysfs, req)
}

fn sel(s: &str) -> Selector {
    s.parse().unwrap()
}

fn attach_req(vm: &str, sels: &[&str]) -> AttachRequest {
    AttachRequest {
        vm: vm.into(),
        selectors: sels.iter().map(|s| sel(s)).collect(),
        scope: Scope::default(),
        force: false,
    }
}

fn validate(xml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.xml");
    std::fs::write(&p, xml).unwrap();
    let out = std::process::Command::new("virt-xml-validate")
        .arg(&p)
        .arg("domain")
        .output()
        .expect("virt-xml-validate (libvirt-clients) is installed");
    assert!(
        out.status.success(),
        "{xml}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Forwards to the test driver and records hot-plug calls instead of making them (the test
/// driver has none); `fail_at` makes the n-th hot-plug call fail.
struct LiveRecorder<'a> {
    inner: &'a Libvirt,
    calls: RefCell<Vec<(&'static str, String)>>,
    fail_at: Option<usize>,
}

impl LiveRecorder<'_> {
    fn record(&self, op: &'static str, name: &str, xml: &str) -> hypervisor::Result<()> {
        let n = {
            let mut c = self.calls.borrow_mut();
            c.push((op, xml.to_string()));
            c.len() - 1
        };
        if self.fail_at == Some(n) {
            return Err(hypervisor::Error::Unsupported {
                op: "hot-plug a device into",
                domain: name.to_string(),
            });
        }
        Ok(())
    }
}

impl Hypervisor for LiveRecorder<'_> {
    fn uri(&self) -> &str {
        self.inner.uri()
    }
    fn capabilities(&self) -> hypervisor::Result<hypervisor::Capabilities> {
        self.inner.capabilities()
    }
    fn list(&self) -> hypervisor::Result<Vec<DomainRecord>> {
        self.inner.list()
    }
    fn get(&self, name: &str) -> hypervisor::Result<Option<DomainRecord>> {
        self.inner.get(name)
    }
    fn define(&self, name: &str, xml: &str) -> hypervisor::Result<()> {
        self.inner.define(name, xml)
    }
    fn undefine(&self, name: &str, nvram: bool) -> hypervisor::Result<()> {
        self.inner.undefine(name, nvram)
    }
    fn start(&self, name: &str) -> hypervisor::Result<()> {
        self.inner.start(name)
    }
    fn shutdown(&self, name: &str) -> hypervisor::Result<()> {
        self.inner.shutdown(name)
    }
    fn destroy(&self, name: &str) -> hypervisor::Result<()> {
        self.inner.destroy(name)
    }
    fn state(&self, name: &str) -> hypervisor::Result<State> {
        self.inner.state(name)
    }
    fn agent_addresses(&self, name: &str) -> hypervisor::Result<Vec<GuestAddress>> {
        self.inner.agent_addresses(name)
    }
    fn inactive_xml(&self, name: &str) -> hypervisor::Result<String> {
        self.inner.inactive_xml(name)
    }
    fn attach_device_live(&self, name: &str, xml: &str) -> hypervisor::Result<()> {
        self.record("attach", name, xml)
    }
    fn detach_device_live(&self, name: &str, xml: &str) -> hypervisor::Result<()> {
        self.record("detach", name, xml)
    }
}

#[test]
fn config_attach_of_a_four_function_turing_then_detach() {
    let tree = fixture_builder::build_host("amd-b550m-gt710-rtx2070s");
    let host = HostRoot::new(tree.path());
    let dir = tempfile::tempdir().unwrap();
    let lv = private_libvirt(dir.path());

    let o = attach(&host, &lv, &attach_req("off", &["2b:00.0"])).unwrap();
    assert!(o.live.is_empty());
    assert_eq!(
        o.config,
        [
            "0000:2b:00.0",
            "0000:2b:00.1",
            "0000:2b:00.2",
            "0000:2b:00.3"
        ]
    );
    let xml = lv.inactive_xml("off").unwrap();
    insta::assert_snapshot!("turing_config_xml", xml);
    validate(&xml);
    let hostdevs: Vec<String> = parse_domain(&xml)
        .unwrap()
        .hostdevs
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(hostdevs, o.config);

    // Attaching again changes nothing.
    let again = attach(&host, &lv, &attach_req("off", &["1"])).unwrap();
    assert!(again.config.is_empty() && again.live.is_empty());
    assert_eq!(lv.inactive_xml("off").unwrap(), xml);

    // status sees it in the config.
    let atts = gpu::attachments(&lv).unwrap();
    let facts = hwdetect::detect(&host);
    let report = gpu::status(&facts, &[], Some(&atts), None);
    let rtx = &report.gpus[1];
    assert_eq!(rtx.attached.len(), 1);
    assert_eq!(
        (
            rtx.attached[0].vm.as_str(),
            rtx.attached[0].live,
            rtx.attached[0].config
        ),
        ("off", false, true)
    );

    let d = detach(
        &host,
        &lv,
        &host,
        &DetachRequest {
            vm: "off".into(),
            selectors: Vec::new(),
            scope: Scope::default(),
            rebind: Rebind::None,
        },
    )
    .unwrap();
    assert_eq!(d.config, o.config);
    assert!(d.rebind.is_empty());
    let after = lv.inactive_xml("off").unwrap();
    assert!(parse_domain(&after).unwrap().hostdevs.is_empty());
    assert!(!after.contains("<hostdev"), "{after}");
}

#[test]
fn running_vm_gets_each_function_hot_plugged_and_the_config_for_next_boot() {
    let tree = fixture_builder::build_host("amd-b550m-gt710-rtx2070s");
    let host = HostRoot::new(tree.path());
    let dir = tempfile::tempdir().unwrap();
    let lv = private_libvirt(dir.path());
    let hv = LiveRecorder {
        inner: &lv,
        calls: RefCell::new(Vec::new()),
        fail_at: None,
    };
    // `on` runs and is persistent: the default scope is live + config.
    let o = attach(&host, &hv, &attach_req("on", &["0000:2b:00.0"])).unwrap();
    assert_eq!(o.live.len(), 4);
    assert_eq!(o.config.len(), 4);
    let calls = hv.calls.borrow().clone();
    assert_eq!(calls.len(), 4);
    insta::assert_snapshot!("turing_live_hostdev_function1", calls[1].1);
    assert!(
        calls
            .iter()
            .all(|(op, x)| *op == "attach" && !x.contains("type=\"pci\" domain"))
    );
    // The persistent config has the full layout; the running XML is untouched by the fake.
    let atts = gpu::attachments(&lv).unwrap();
    assert_eq!(atts.len(), 4);
    assert!(atts.iter().all(|a| a.vm == "on" && a.config && !a.live));
}

#[test]
fn a_failed_hot_plug_unplugs_what_was_plugged() {
    let tree = fixture_builder::build_host("amd-b550m-gt710-rtx2070s");
    let host = HostRoot::new(tree.path());
    let dir = tempfile::tempdir().unwrap();
    let lv = private_libvirt(dir.path());
    let hv = LiveRecorder {
        inner: &lv,
        calls: RefCell::new(Vec::new()),
        fail_at: Some(2),
    };
    let err = attach(&host, &hv, &attach_req("on", &["2b:00.0"])).unwrap_err();
    assert_eq!(err.exit_kind(), vmctl::ExitKind::Failure, "{err}");
    let ops: Vec<(&str, String)> = hv
        .calls
        .borrow()
        .iter()
        .map(|(op, x)| {
            let f = x.split("function=\"").nth(1).unwrap_or("")[..3].to_string();
            (*op, f)
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("attach", "0x0".to_string()),
            ("attach", "0x1".into()),
            ("attach", "0x2".into()),
            ("detach", "0x1".into()),
            ("detach", "0x0".into()),
        ]
    );
    // Nothing reached the config.
    assert!(gpu::attachments(&lv).unwrap().is_empty());
}

#[test]
fn different_gpus_to_different_vms_and_no_stealing() {
    // Single GPUs of an NVSwitch host to separate VMs: the Shared NVSwitch setup allows it.
    let tree = fixture_builder::build_from_str(&format!(
        "base = \"hgx-h200x8-nvswitch-truncated\"\n{}",
        crate::support::SHARED_NVSWITCH
    ))
    .unwrap();
    let host = HostRoot::new(tree.path());
    let dir = tempfile::tempdir().unwrap();
    let lv = private_libvirt(dir.path());
    attach(&host, &lv, &attach_req("off", &["0", "1"])).unwrap();
    attach(&host, &lv, &attach_req("off2", &["0000:5d:00.0"])).unwrap();
    let err = attach(&host, &lv, &attach_req("off2", &["1"])).unwrap_err();
    assert_eq!(err.exit_kind(), vmctl::ExitKind::Usage);
    assert!(
        err.to_string()
            .contains("GPU 0000:2a:00.0 is already attached to VM `off`"),
        "{err}"
    );
    let facts = hwdetect::detect(&host);
    let report = gpu::status(&facts, &[], Some(&gpu::attachments(&lv).unwrap()), None);
    let holders: Vec<(String, Vec<String>)> = report
        .gpus
        .iter()
        .map(|g| {
            (
                g.bdf.clone(),
                g.attached.iter().map(|a| a.vm.clone()).collect(),
            )
        })
        .filter(|(_, v): &(String, Vec<String>)| !v.is_empty())
        .collect();
    assert_eq!(
        holders,
        [
            ("0000:18:00.0".to_string(), vec!["off".to_string()]),
            ("0000:2a:00.0".into(), vec!["off".into()]),
            ("0000:5d:00.0".into(), vec!["off2".into()]),
        ]
    );
    // Detaching one GPU of `a` by BDF keeps the other.
    let d = detach(
        &host,
        &lv,
        &host,
        &DetachRequest {
            vm: "off".into(),
            selectors: vec![sel("2a:00.0")],
            scope: Scope::default(),
            rebind: Rebind::None,
        },
    )
    .unwrap();
    assert_eq!(d.gpus, ["0000:2a:00.0"]);
    let left: Vec<String> = gpu::attachments(&lv)
        .unwrap()
        .into_iter()
        .filter(|a| a.vm == "off")
        .map(|a| a.bdf)
        .collect();
    assert_eq!(left, ["0000:18:00.0"]);
}

#[test]
fn detach_rebind_host_writes_override_unbind_probe_in_order() {
    let tree = fixture_builder::build_host("synthetic-vfio-bound");
    let host = HostRoot::new(tree.path());
    let dir = tempfile::tempdir().unwrap();
    let lv = private_libvirt(dir.path());
    attach(&host, &lv, &attach_req("off", &["01:00.0"])).unwrap();
    let kernel = FakeKernel::new(
        host.clone(),
        &[
            ("0000:01:00.0", "nvidia"),
            ("0000:01:00.1", "snd_hda_intel"),
        ],
    );
    let d = detach(
        &host,
        &lv,
        &kernel,
        &DetachRequest {
            vm: "off".into(),
            selectors: Vec::new(),
            scope: Scope::default(),
            rebind: Rebind::Host,
        },
    )
    .unwrap();
    let w = |path: &str, value: &str| SysfsWrite {
        path: path.into(),
        value: value.into(),
    };
    let expected = vec![
        w("/sys/bus/pci/devices/0000:01:00.0/driver_override", "\n"),
        w(
            "/sys/bus/pci/devices/0000:01:00.0/driver/unbind",
            "0000:01:00.0",
        ),
        w("/sys/bus/pci/drivers_probe", "0000:01:00.0"),
        w("/sys/bus/pci/devices/0000:01:00.1/driver_override", "\n"),
        w(
            "/sys/bus/pci/devices/0000:01:00.1/driver/unbind",
            "0000:01:00.1",
        ),
        w("/sys/bus/pci/drivers_probe", "0000:01:00.1"),
    ];
    assert_eq!(kernel.writes(), expected);
    assert_eq!(d.rebind, expected);
    let after = hwdetect::detect(&host);
    assert_eq!(
        after.gpus[0].function_drivers,
        [
            Some("nvidia".to_string()),
            Some("snd_hda_intel".to_string())
        ]
    );

    // And back onto vfio-pci: attach again, detach with --rebind vfio.
    attach(&host, &lv, &attach_req("off", &["0"])).unwrap();
    let kernel = FakeKernel::new(host.clone(), &[]);
    detach(
        &host,
        &lv,
        &kernel,
        &DetachRequest {
            vm: "off".into(),
            selectors: vec![sel("0")],
            scope: Scope::default(),
            rebind: Rebind::Vfio,
        },
    )
    .unwrap();
    assert_eq!(
        kernel.writes()[..3],
        [
            w(
                "/sys/bus/pci/devices/0000:01:00.0/driver_override",
                "vfio-pci"
            ),
            w(
                "/sys/bus/pci/devices/0000:01:00.0/driver/unbind",
                "0000:01:00.0"
            ),
            w("/sys/bus/pci/drivers_probe", "0000:01:00.0"),
        ]
    );
    assert_eq!(
        hwdetect::detect(&host).gpus[0].function_drivers,
        [Some("vfio-pci".to_string()), Some("vfio-pci".to_string())]
    );
}

#[test]
fn config_attach_to_a_non_q35_machine_is_refused() {
    let tree = fixture_builder::build_host("intel-z170-gtx960");
    let host = HostRoot::new(tree.path());
    let dir = tempfile::tempdir().unwrap();
    let lv = private_libvirt(dir.path());
    let err = attach(&host, &lv, &attach_req("pc", &[])).unwrap_err();
    assert_eq!(err.exit_kind(), vmctl::ExitKind::Usage);
    assert_eq!(
        err.to_string(),
        "VM `pc` has machine type `pc`: a GPU's functions need a PCIe (q35) slot"
    );
    assert!(!lv.inactive_xml("pc").unwrap().contains("<hostdev"));
}

fn config_hostdevs(lv: &Libvirt, vm: &str) -> Vec<String> {
    let xml = lv.inactive_xml(vm).unwrap();
    parse_domain(&xml)
        .unwrap()
        .hostdevs
        .iter()
        .map(ToString::to_string)
        .collect()
}

const HGX_SWITCHES: [&str; 4] = [
    "0000:05:00.0",
    "0000:06:00.0",
    "0000:07:00.0",
    "0000:08:00.0",
];

#[test]
fn all_gpus_of_an_hgx_host_take_the_nvswitches_and_the_last_gpu_takes_them_back() {
    let tree = fixture_builder::build_host("hgx-h200x8-nvswitch");
    let host = HostRoot::new(tree.path());
    let dir = tempfile::tempdir().unwrap();
    let lv = private_libvirt(dir.path());
    let o = attach(&host, &lv, &attach_req("off", &["all"])).unwrap();
    assert_eq!(o.gpus.len(), 8);
    assert_eq!(o.nvswitches, HGX_SWITCHES);
    assert!(o.forced.is_empty() && o.notes.is_empty());
    let held = config_hostdevs(&lv, "off");
    assert_eq!(held.len(), 12, "{held:?}");
    assert!(HGX_SWITCHES.iter().all(|s| held.iter().any(|h| h == s)));
    let xml = lv.inactive_xml("off").unwrap();
    validate(&xml);
    // managed='yes': libvirt moves each switch to vfio-pci at start and back at stop.
    assert_eq!(xml.matches("managed='yes'").count(), 12, "{xml}");

    // gpu status names the VM holding each switch.
    let facts = hwdetect::detect(&host);
    let report = gpu::status(&facts, &[], Some(&gpu::attachments(&lv).unwrap()), None);
    let holders: Vec<(&str, Vec<&str>)> = report
        .nvswitches
        .iter()
        .map(|s| {
            (
                s.bdf.as_str(),
                s.attached.iter().map(|a| a.vm.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(holders, HGX_SWITCHES.map(|s| (s, vec!["off"])).to_vec());
    // Another VM can have neither (the switches' own claim check: passthrough::nvswitch).
    let err = attach(&host, &lv, &attach_req("off2", &["all"])).unwrap_err();
    assert!(
        err.to_string()
            .contains("GPU 0000:18:00.0 is already attached to VM `off`"),
        "{err}"
    );

    // Attaching a GPU the VM has again changes nothing and is no partial set.
    let again = attach(&host, &lv, &attach_req("off", &["0"])).unwrap();
    assert!(
        again.forced.is_empty() && again.config.is_empty(),
        "{again:?}"
    );

    // Detaching one GPU keeps the switches; the last GPU takes them along.
    let kernel = FakeKernel::new(host.clone(), &[]);
    let d = |sels: &[&str]| DetachRequest {
        vm: "off".into(),
        selectors: sels.iter().map(|s| sel(s)).collect(),
        scope: Scope::default(),
        rebind: Rebind::None,
    };
    detach(&host, &lv, &kernel, &d(&["0"])).unwrap();
    assert_eq!(config_hostdevs(&lv, "off").len(), 11);
    detach(&host, &lv, &kernel, &d(&[])).unwrap();
    assert!(config_hostdevs(&lv, "off").is_empty());
}

#[test]
fn fewer_gpus_of_an_hgx_host_are_refused_and_forced_with_a_warning() {
    let tree = fixture_builder::build_host("hgx-h200x8-nvswitch");
    let host = HostRoot::new(tree.path());
    let dir = tempfile::tempdir().unwrap();
    let lv = private_libvirt(dir.path());
    let err = attach(&host, &lv, &attach_req("off", &["0", "1"])).unwrap_err();
    assert_eq!(err.exit_kind(), vmctl::ExitKind::Usage);
    let msg = err.to_string();
    assert!(
        msg.contains("only 2 (0000:18:00.0, 0000:2a:00.0) of this host's 8 GPUs")
            && msg.contains("the NVLink/NVSwitch fabric will not work in the guest")
            && msg.contains("CUDA may fail on multi-GPU jobs"),
        "{msg}"
    );
    let help = err.help().join("\n");
    assert!(
        help.contains("pass `--gpu all` for full passthrough")
            && help.contains("FABRIC_MODE=1")
            && help.contains("use --force"),
        "{help}"
    );
    assert!(
        config_hostdevs(&lv, "off").is_empty(),
        "refused: nothing changed"
    );

    let mut req = attach_req("off", &["0", "1"]);
    req.force = true;
    let o = attach(&host, &lv, &req).unwrap();
    assert_eq!(o.forced.len(), 1);
    assert!(o.forced[0].contains("NVLink/NVSwitch fabric will not work"));
    assert!(o.nvswitches.is_empty());
    assert_eq!(
        config_hostdevs(&lv, "off"),
        ["0000:18:00.0", "0000:2a:00.0"]
    );
    // The other six join later: with what the VM holds that is every GPU, so the switches come.
    let o = attach(
        &host,
        &lv,
        &attach_req("off", &["2", "3", "4", "5", "6", "7"]),
    )
    .unwrap();
    assert!(o.forced.is_empty(), "{:?}", o.forced);
    assert_eq!(o.nvswitches, HGX_SWITCHES);
    assert_eq!(config_hostdevs(&lv, "off").len(), 12);
}

#[test]
fn shared_nvswitch_host_gives_single_gpus_without_switches_and_a_note() {
    let tree = fixture_builder::build_host("synthetic-hgx-shared-nvswitch");
    let host = HostRoot::new(tree.path());
    let dir = tempfile::tempdir().unwrap();
    let lv = private_libvirt(dir.path());
    let o = attach(&host, &lv, &attach_req("off", &["3"])).unwrap();
    assert!(o.forced.is_empty() && o.nvswitches.is_empty());
    assert_eq!(o.notes.len(), 1);
    assert!(
        o.notes[0].contains("Shared NVSwitch multitenancy")
            && o.notes[0].contains("activate the NVLink partition"),
        "{:?}",
        o.notes
    );
    // All GPUs too go without the switches: they stay with the host's fabric manager.
    let o = attach(&host, &lv, &attach_req("off2", &["0", "1", "2"])).unwrap();
    assert!(o.nvswitches.is_empty());
    assert_eq!(config_hostdevs(&lv, "off"), ["0000:5d:00.0"]);
}
