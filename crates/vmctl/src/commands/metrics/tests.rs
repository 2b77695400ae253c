//! Unit tests of `metrics`: the exposition of a view (snapshot), label escaping, what is left
//! out when unknown, the answer when libvirt is down, and the textfile's checks.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::commands::observe::{GpuRow, VmRow};

fn build() -> BuildInfo {
    BuildInfo::parse("0.1.0 (1a2b3c4)")
}

fn vm(name: &str, state: State) -> VmRow {
    VmRow {
        name: name.into(),
        state,
        vcpus: 2,
        cpu_percent: None,
        cpu_time_ns: None,
        memory_used_kib: None,
        memory_kib: 2_097_152,
        disk_read_bytes: None,
        disk_write_bytes: None,
        net_rx_bytes: None,
        net_tx_bytes: None,
        disk_read_bps: None,
        disk_write_bps: None,
        net_rx_bps: None,
        net_tx_bps: None,
        ips: Vec::new(),
        gpus: Vec::new(),
        autostart: false,
        persistent: true,
        vmctl: true,
        os: Some("ubuntu".into()),
        cluster: None,
        role: None,
    }
}

fn view() -> View {
    let running = VmRow {
        cpu_time_ns: Some(12_000_000_345),
        memory_used_kib: Some(500_000),
        disk_read_bytes: Some(1_000),
        disk_write_bytes: Some(500),
        net_rx_bytes: Some(2_000),
        net_tx_bytes: Some(3_000),
        autostart: true,
        gpus: vec!["0000:01:00.0".into()],
        cluster: Some("lab".into()),
        role: Some("worker".into()),
        os: Some("talos".into()),
        ..vm("web1", State::Running)
    };
    View {
        uri: "qemu:///system".into(),
        vms: vec![running, vm("db1", State::ShutOff)],
        gpus: vec![
            GpuRow {
                bdf: "0000:01:00.0".into(),
                name: "GA102 [GeForce RTX 3090]".into(),
                driver: Some("vfio-pci".into()),
                vm: Some("web1".into()),
                isolated: Some(true),
            },
            GpuRow {
                bdf: "0000:02:00.0".into(),
                name: "TU104 \"Super\"\\x".into(),
                driver: None,
                vm: None,
                isolated: Some(false),
            },
        ],
        gpus_note: None,
        bridge: Some(scan()),
        bridge_name: "br0".into(),
        round_trips: 1,
    }
}

fn scan() -> BridgeScan {
    BridgeScan {
        interface: "br0".into(),
        subnet: "198.18.0.0/24".into(),
        free_count: 250,
        used_count: 4,
        conflicts: vec!["198.18.0.9".parse().unwrap()],
        scanned_at: 1_800_000_000,
    }
}

fn scrape(view: View) -> Scrape {
    Scrape {
        bridge: view.bridge.clone(),
        view: Ok(view),
        duration: Duration::from_millis(12),
    }
}

#[test]
fn a_view_renders_as_the_text_format() {
    insta::assert_snapshot!(render(&scrape(view()), &build()));
}

#[test]
fn label_values_escape_backslash_quote_and_newline() {
    assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
    assert_eq!(escape_label("line1\nline2"), "line1\\nline2");
    assert_eq!(escape_label("plain-name_1"), "plain-name_1");
    let text = render(&scrape(view()), &build());
    assert!(
        text.contains(r#"name="TU104 \"Super\"\\x""#),
        "GPU name escaped: {text}"
    );
    let mut v = view();
    v.vms[0].os = Some("weird\nos".into());
    assert!(render(&scrape(v), &build()).contains(r#"os="weird\nos""#));
}

#[test]
fn a_stopped_vm_has_no_counter_samples_rather_than_zeros() {
    let text = render(&scrape(view()), &build());
    for family in [
        "vmctl_vm_cpu_seconds_total",
        "vmctl_vm_memory_resident_bytes",
        "vmctl_vm_disk_read_bytes_total",
        "vmctl_vm_network_transmit_bytes_total",
    ] {
        assert!(
            text.contains(&format!("{family}{{vm=\"web1\"}}")),
            "{family}"
        );
        assert!(
            !text.contains(&format!("{family}{{vm=\"db1\"}}")),
            "{family}"
        );
    }
    // What the definition knows is there for a stopped VM too.
    assert!(text.contains("vmctl_vm_vcpus{vm=\"db1\"} 2\n"));
    assert!(text.contains("vmctl_vm_memory_bytes{vm=\"db1\"} 2147483648\n"));
    assert!(text.contains("vmctl_vm_state{vm=\"db1\",state=\"shut_off\"} 1\n"));
    assert!(text.contains("vmctl_vm_running{vm=\"db1\"} 0\n"));

    // Not even when libvirt gives a shut-off domain a CPU time (libvirt 9.0 does).
    let mut v = view();
    v.vms[1].cpu_time_ns = Some(820_000_000);
    let text = render(&scrape(v), &build());
    assert!(
        !text.contains("vmctl_vm_cpu_seconds_total{vm=\"db1\"}"),
        "{text}"
    );

    // With only stopped VMs the counter families are left out entirely.
    let mut v = view();
    v.vms.remove(0);
    let text = render(&scrape(v), &build());
    assert!(!text.contains("vmctl_vm_cpu_seconds_total"), "{text}");
}

#[test]
fn every_vm_has_one_series_per_state_and_exactly_one_is_1() {
    let text = render(&scrape(view()), &build());
    for vm in ["web1", "db1"] {
        let states: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("vmctl_vm_state{{vm=\"{vm}\"")))
            .collect();
        assert_eq!(states.len(), STATES.len(), "{states:?}");
        assert_eq!(states.iter().filter(|l| l.ends_with(" 1")).count(), 1);
    }
}

#[test]
fn libvirt_down_still_answers_with_build_info_and_the_last_scan() {
    let s = Scrape {
        view: Err("connect to libvirt".into()),
        bridge: Some(scan()),
        duration: Duration::from_millis(3),
    };
    let text = render(&s, &build());
    assert!(text.contains("vmctl_libvirt_up 0\n"));
    assert!(text.contains("vmctl_build_info{version=\"0.1.0\",revision=\"1a2b3c4\"} 1\n"));
    assert!(
        text.contains("vmctl_bridge_free_addresses{bridge=\"br0\",subnet=\"198.18.0.0/24\"} 250\n")
    );
    assert!(!text.contains("vmctl_vm_"), "{text}");
    assert!(!text.contains("vmctl_gpu_"), "{text}");
}

#[test]
fn no_scan_yet_means_no_bridge_series_and_unknown_isolation_no_sample() {
    let mut v = view();
    v.bridge = None;
    for g in &mut v.gpus {
        g.isolated = None;
    }
    let text = render(&scrape(v), &build());
    assert!(!text.contains("vmctl_bridge_"), "{text}");
    assert!(!text.contains("vmctl_gpu_isolated"), "{text}");
    assert!(text.contains("vmctl_gpu_info{bdf=\"0000:02:00.0\",name="));
}

#[test]
fn cpu_seconds_are_exact_decimals() {
    assert_eq!(seconds(0), "0");
    assert_eq!(seconds(3_000_000_000), "3");
    assert_eq!(seconds(12_000_000_345), "12.000000345");
    assert_eq!(seconds(1_500_000_000), "1.5");
}

#[test]
fn build_info_parses_the_version_string() {
    assert_eq!(
        BuildInfo::parse("0.1.0 (1a2b3c4-dirty)"),
        BuildInfo {
            version: "0.1.0".into(),
            revision: "1a2b3c4-dirty".into()
        }
    );
    assert_eq!(BuildInfo::parse("0.2.0").revision, "unknown");
}

#[test]
fn a_textfile_must_end_in_prom_and_its_directory_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = write_textfile(&tmp.path().join("vmctl.txt"), "x 1\n", true).unwrap_err();
    assert_eq!(bad.exit_kind(), ExitKind::Usage);
    assert!(bad.to_string().contains("must end in .prom"), "{bad}");
    assert!(!tmp.path().join("vmctl.txt").exists());
    let missing =
        write_textfile(&tmp.path().join("no/such/vmctl.prom"), "x 1\n", true).unwrap_err();
    assert_eq!(missing.exit_kind(), ExitKind::Usage);
    assert!(
        missing.help()[0].contains("mkdir -p"),
        "{:?}",
        missing.help()
    );
    assert!(write_textfile(&tmp.path().join(".prom"), "x 1\n", true).is_err());
}

#[test]
fn a_textfile_is_written_whole_with_mode_0644() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vmctl.prom");
    let text = render(&scrape(view()), &build());
    let w = write_textfile(&path, &text, true).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(w.samples, sample_count(&text));
    assert!(w.samples > 20);
    // No temporary file left next to it.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn no_vms_means_no_vm_families_not_headers_alone() {
    let mut v = view();
    v.vms.clear();
    v.gpus.clear();
    let text = render(&scrape(v), &build());
    assert!(!text.contains("vmctl_vm_"), "{text}");
    assert!(!text.contains("vmctl_gpu_"), "{text}");
    assert!(text.contains("vmctl_libvirt_up 1\n"));
}
