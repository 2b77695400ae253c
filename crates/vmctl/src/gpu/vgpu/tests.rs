use super::*;

fn facts(host: &str) -> (tempfile::TempDir, HostFacts) {
    let t = fixture_builder::build_host(host);
    let f = hwdetect::detect(&HostRoot::new(t.path()));
    (t, f)
}

fn gpu<'a>(f: &'a HostFacts, bdf: &str) -> &'a Gpu {
    f.gpus.iter().find(|g| g.bdf == bdf).unwrap()
}

const UUID: &str = "0b5c4d1e-0000-4000-8000-000000000001";

#[test]
fn form_is_read_from_sysfs() {
    let (_t, a) = facts("synthetic-a100-vgpu16-mdev");
    assert_eq!(form(&a, gpu(&a, "0000:41:00.0")), VgpuForm::Mdev);
    let (_t, l) = facts("synthetic-l40s-vgpu17-sriov");
    assert_eq!(form(&l, gpu(&l, "0000:81:00.0")), VgpuForm::SriovVf);
    let (_t, h) = facts("synthetic-h100-mig");
    assert_eq!(form(&h, gpu(&h, "0000:c1:00.0")), VgpuForm::None);
}

#[test]
fn mdev_offers_sum_the_vfs_and_the_choice_is_the_first_free_parent() {
    let (_t, f) = facts("synthetic-a100-vgpu16-mdev");
    let pf = gpu(&f, "0000:41:00.0");
    assert_eq!(
        offers(&f, pf),
        [
            TypeOffer {
                id: "nvidia-559".into(),
                name: Some("GRID A100-4C".into()),
                available: 3
            },
            TypeOffer {
                id: "nvidia-562".into(),
                name: Some("GRID A100-10C".into()),
                available: 0
            }
        ]
    );
    // By id and by name (case-insensitive); 41:00.4 has none left, so 41:00.5.
    for wanted in ["nvidia-559", "grid a100-4c"] {
        let p = choose(&f, None, wanted, &[], UUID).unwrap();
        assert_eq!(
            p,
            VgpuPlan::Mdev {
                gpu: "0000:41:00.0".into(),
                parent: "0000:41:00.5".into(),
                type_id: "nvidia-559".into(),
                type_name: Some("GRID A100-4C".into()),
                uuid: UUID.into(),
            }
        );
    }
    let ((path, value), (undo, one)) = choose(&f, None, "nvidia-559", &[], UUID).unwrap().writes();
    assert_eq!(
        path,
        "/sys/bus/pci/devices/0000:41:00.5/mdev_supported_types/nvidia-559/create"
    );
    assert_eq!(value, UUID);
    assert_eq!(undo, format!("/sys/bus/mdev/devices/{UUID}/remove"));
    assert_eq!(one, "1");
}

#[test]
fn sriov_choice_is_a_free_vf_offering_the_type() {
    let (_t, f) = facts("synthetic-l40s-vgpu17-sriov");
    let pf = gpu(&f, "0000:81:00.0");
    let o = offers(&f, pf);
    assert_eq!(o[0].id, "1155");
    assert_eq!(o[0].available, 3);
    let p = choose(&f, None, "NVIDIA L40S-24Q", &[], UUID).unwrap();
    assert_eq!(
        p,
        VgpuPlan::SriovVf {
            gpu: "0000:81:00.0".into(),
            vf: "0000:81:00.5".into(),
            type_id: 1155,
            type_name: "NVIDIA L40S-24Q".into(),
        }
    );
    // A VF another VM holds is skipped.
    let atts = [Attachment {
        bdf: "0000:81:00.5".into(),
        vm: "other".into(),
        live: false,
        config: true,
    }];
    let VgpuPlan::SriovVf { vf, .. } = choose(&f, None, "1155", &atts, UUID).unwrap() else {
        panic!()
    };
    assert_eq!(vf, "0000:81:00.6");
    // The VF in use is listed with its type's name.
    let used = in_use(&f, pf, &[], &BTreeMap::new());
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].type_name.as_deref(), Some("NVIDIA L40S-24Q"));
}

#[test]
fn refusals_name_what_is_offered_and_what_is_left() {
    let (_t, f) = facts("synthetic-a100-vgpu16-mdev");
    match choose(&f, None, "A100-7C", &[], UUID).unwrap_err() {
        VgpuError::TypeNotOffered { offered, .. } => assert_eq!(
            offered,
            [
                "0000:41:00.0: nvidia-559 (GRID A100-4C)",
                "0000:41:00.0: nvidia-562 (GRID A100-10C)"
            ]
        ),
        e => panic!("{e}"),
    }
    let e = choose(&f, None, "nvidia-562", &[], UUID).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no free instance of vGPU type `nvidia-562`: 0000:41:00.0 has 0 of nvidia-562 \
         (GRID A100-10C) available"
    );
    // Passed whole: refused when named, and the only GPU here, so refused anyway.
    let atts = [Attachment {
        bdf: "0000:41:00.0".into(),
        vm: "big".into(),
        live: true,
        config: true,
    }];
    let sel = [gpu(&f, "0000:41:00.0")];
    assert!(matches!(
        choose(&f, Some(&sel), "nvidia-559", &atts, UUID),
        Err(VgpuError::PassedWhole { .. })
    ));
    assert!(matches!(
        choose(&f, None, "nvidia-559", &atts, UUID),
        Err(VgpuError::PassedWhole { .. })
    ));
    let (_t, h) = facts("synthetic-h100-mig");
    assert_eq!(
        choose(&h, None, "nvidia-559", &[], UUID)
            .unwrap_err()
            .to_string(),
        "no vGPU on this host: neither `mdev_supported_types` nor SR-IOV VFs with NVIDIA's \
         `nvidia/creatable_vgpu_types` in sysfs"
    );
}

#[test]
fn a_non_sriov_gpu_with_mdev_types_on_itself_is_its_own_parent() {
    // A Tesla T4 (Turing, no SR-IOV): the types sit on the GPU.
    let t = fixture_builder::build_from_str(
        r#"
        [[device]]
        bdf = "3b:00.0"
        class = "0302"
        id = "10de:1eb8"
        driver = "nvidia"
        group = 30
        mdev_type = [{ id = "nvidia-222", name = "GRID T4-4C", available = 4 }]
        "#,
    )
    .unwrap();
    let f = hwdetect::detect(&HostRoot::new(t.path()));
    let VgpuPlan::Mdev { parent, .. } = choose(&f, None, "GRID T4-4C", &[], UUID).unwrap() else {
        panic!()
    };
    assert_eq!(parent, "0000:3b:00.0");
}

#[test]
fn mig_modes_from_nvidia_smi_and_the_passthrough_note() {
    let m = parse_mig_modes(
        "00000000:C1:00.0, Enabled, Enabled\n00000000:01:00.0, [N/A], [N/A]\ngarbage\n",
    );
    assert_eq!(
        m.get("0000:c1:00.0"),
        Some(&("Enabled".to_string(), "Enabled".to_string()))
    );
    assert_eq!(m.len(), 1);
    let (_t, h) = facts("synthetic-h100-mig");
    let s = mig_status(gpu(&h, "0000:c1:00.0"), None);
    assert_eq!(s.mode, None);
    assert_eq!(s.instances.len(), 2);
    assert_eq!(s.note.as_deref(), Some(MIG_PASSTHROUGH_NOTE));
}

#[test]
fn mig_mode_is_read_through_the_runner_on_the_real_host_only() {
    use hostio::{Output, RecordingRunner};
    let runner = RecordingRunner::new().answer(
        ["nvidia-smi"],
        Output::ok("00000000:C1:00.0, Disabled, Enabled\n"),
    );
    let m = mig_modes(&HostRoot::system(), &runner).unwrap();
    assert_eq!(m["0000:c1:00.0"].1, "Enabled");
    assert_eq!(
        runner.calls(),
        [[
            "nvidia-smi",
            "--query-gpu=pci.bus_id,mig.mode.current,mig.mode.pending",
            "--format=csv,noheader"
        ]]
    );
    let fixture = RecordingRunner::new();
    assert_eq!(mig_modes(&HostRoot::new("/nonexistent"), &fixture), None);
    assert!(fixture.calls().is_empty());
}

mod on_the_test_driver {
    use super::*;
    use hostio::SystemRunner;
    use hypervisor::{DomainRecord, GuestAddress, Libvirt, State};

    use crate::config::Config;

    fn define(lv: &Libvirt, name: &str) {
        lv.define(
            name,
            &format!(
                "<domain type='test'><name>{name}</name><memory>65536</memory>\
                 <os><type>hvm</type></os><devices/></domain>"
            ),
        )
        .unwrap();
    }

    fn current(host: &HostRoot, vf: &str) -> String {
        std::fs::read_to_string(host.path(vf_type_path(vf))).unwrap()
    }

    /// The test driver, with vmctl's metadata call made to fail.
    struct MetadataFails<'a>(&'a Libvirt);

    impl Hypervisor for MetadataFails<'_> {
        fn uri(&self) -> &str {
            self.0.uri()
        }
        fn capabilities(&self) -> hypervisor::Result<hypervisor::Capabilities> {
            self.0.capabilities()
        }
        fn list(&self) -> hypervisor::Result<Vec<DomainRecord>> {
            self.0.list()
        }
        fn get(&self, name: &str) -> hypervisor::Result<Option<DomainRecord>> {
            self.0.get(name)
        }
        fn define(&self, name: &str, xml: &str) -> hypervisor::Result<()> {
            self.0.define(name, xml)
        }
        fn undefine(&self, name: &str, nvram: bool) -> hypervisor::Result<()> {
            self.0.undefine(name, nvram)
        }
        fn start(&self, name: &str) -> hypervisor::Result<()> {
            self.0.start(name)
        }
        fn shutdown(&self, name: &str) -> hypervisor::Result<()> {
            self.0.shutdown(name)
        }
        fn destroy(&self, name: &str) -> hypervisor::Result<()> {
            self.0.destroy(name)
        }
        fn state(&self, name: &str) -> hypervisor::Result<State> {
            self.0.state(name)
        }
        fn agent_addresses(&self, name: &str) -> hypervisor::Result<Vec<GuestAddress>> {
            self.0.agent_addresses(name)
        }
        fn inactive_xml(&self, name: &str) -> hypervisor::Result<String> {
            self.0.inactive_xml(name)
        }
        fn set_vmctl_metadata(
            &self,
            name: &str,
            _xml: &str,
            _live: bool,
        ) -> hypervisor::Result<()> {
            Err(hypervisor::Error::Unsupported {
                op: "update the metadata of",
                domain: format!("{name} (injected failure)"),
            })
        }
    }

    fn request(vm: &str) -> AttachVgpu {
        AttachVgpu {
            vm: vm.into(),
            vgpu_type: "NVIDIA L40S-24Q".into(),
            selectors: Vec::new(),
        }
    }

    #[test]
    fn attach_records_the_vf_in_the_domain_and_detach_gives_it_back() {
        let t = fixture_builder::build_host("synthetic-l40s-vgpu17-sriov");
        let host = HostRoot::new(t.path());
        let lv = Libvirt::open("test:///default").unwrap();
        define(&lv, "vgpu-t1");
        let config = Config::defaults();
        let ctx = Ctx::new(&config, &host, &SystemRunner, &lv);
        let a = attach(&ctx, &request("vgpu-t1"), false, true).unwrap();
        assert_eq!(current(&host, "0000:81:00.5"), "1155");
        let xml = lv.inactive_xml("vgpu-t1").unwrap();
        let d = parse_domain(&xml).unwrap();
        assert_eq!(d.hostdevs, ["81:00.5".parse().unwrap()]);
        assert!(
            xml.contains("managed=\"no\"") || xml.contains("managed='no'"),
            "{xml}"
        );
        assert_eq!(d.metadata.unwrap().vgpus, [a.plan.hostdev().unwrap()]);

        let out = detach(
            &ctx,
            &DetachVgpu {
                vm: "vgpu-t1".into(),
                which: None,
            },
            false,
            true,
        )
        .unwrap();
        assert_eq!(out.removed, ["0000:81:00.5"]);
        assert_eq!(current(&host, "0000:81:00.5"), "0");
        let d = parse_domain(&lv.inactive_xml("vgpu-t1").unwrap()).unwrap();
        assert!(d.hostdevs.is_empty());
        assert!(d.metadata.unwrap().vgpus.is_empty());
    }

    #[test]
    fn a_failed_step_takes_the_vgpu_type_back_and_the_domain_too() {
        let t = fixture_builder::build_host("synthetic-l40s-vgpu17-sriov");
        let host = HostRoot::new(t.path());
        let lv = Libvirt::open("test:///default").unwrap();
        define(&lv, "vgpu-t2");
        let before = lv.inactive_xml("vgpu-t2").unwrap();
        let hv = MetadataFails(&lv);
        let config = Config::defaults();
        let ctx = Ctx::new(&config, &host, &SystemRunner, &hv);
        attach(&ctx, &request("vgpu-t2"), false, true).unwrap_err();
        assert_eq!(current(&host, "0000:81:00.5"), "0");
        assert_eq!(lv.inactive_xml("vgpu-t2").unwrap(), before);
    }
}
