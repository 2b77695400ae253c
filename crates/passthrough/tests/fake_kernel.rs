//! The fake kernel on a fixture tree: host and vfio rebind sequences move the `driver` links so
//! that detection afterwards sees the new binding.

use hostio::HostRoot;
use passthrough::{FakeKernel, SysfsWrite, apply_writes, bind_host_steps, bind_vfio_steps};

fn drivers(root: &HostRoot, bdf: &str) -> Vec<Option<String>> {
    let f = hwdetect::detect(root);
    let g = f.gpus.iter().find(|g| g.bdf == bdf).expect("gpu");
    g.function_drivers.clone()
}

fn functions(root: &HostRoot, bdf: &str) -> Vec<(String, Option<String>)> {
    let f = hwdetect::detect(root);
    let g = f.gpus.iter().find(|g| g.bdf == bdf).expect("gpu");
    g.functions
        .iter()
        .cloned()
        .zip(g.function_drivers.iter().cloned())
        .collect()
}

#[test]
fn host_rebind_then_vfio_rebind_round_trips_the_driver_links() {
    let tree = fixture_builder::build_host("synthetic-vfio-bound");
    let root = HostRoot::new(tree.path());
    let kernel = FakeKernel::new(
        root.clone(),
        &[
            ("0000:01:00.0", "nvidia"),
            ("0000:01:00.1", "snd_hda_intel"),
        ],
    );
    let gpu = "0000:01:00.0";
    assert_eq!(
        drivers(&root, gpu),
        vec![Some("vfio-pci".into()), Some("vfio-pci".into())]
    );

    apply_writes(&kernel, &bind_host_steps(&functions(&root, gpu))).unwrap();
    assert_eq!(
        drivers(&root, gpu),
        vec![Some("nvidia".into()), Some("snd_hda_intel".into())]
    );
    let link = std::fs::read_link(root.path("/sys/bus/pci/devices/0000:01:00.0/driver")).unwrap();
    assert_eq!(
        link,
        std::path::Path::new("../../../../bus/pci/drivers/nvidia")
    );
    assert_eq!(
        root.read_to_string("/sys/bus/pci/devices/0000:01:00.0/driver_override")
            .unwrap(),
        "(null)\n"
    );

    apply_writes(&kernel, &bind_vfio_steps(&functions(&root, gpu))).unwrap();
    assert_eq!(
        drivers(&root, gpu),
        vec![Some("vfio-pci".into()), Some("vfio-pci".into())]
    );
    assert_eq!(kernel.writes().len(), 12);
}

#[test]
fn a_failed_unbind_stops_the_sequence() {
    let tree = fixture_builder::build_host("synthetic-vfio-bound");
    let root = HostRoot::new(tree.path());
    let kernel = FakeKernel::new(root.clone(), &[]).failing_at(1);
    let err =
        apply_writes(&kernel, &bind_host_steps(&functions(&root, "0000:01:00.0"))).unwrap_err();
    assert!(err.to_string().contains("driver/unbind"), "{err}");
    assert_eq!(
        kernel.writes()[1],
        SysfsWrite {
            path: "/sys/bus/pci/devices/0000:01:00.0/driver/unbind".into(),
            value: "0000:01:00.0".into()
        }
    );
    assert_eq!(kernel.writes().len(), 2);
}
