//! CLI tests for `gpu-vm-bootstrap detect`: JSON and human views on fixture hosts, warnings on
//! broken trees, and the `--capture` round trip (capture, extract with tar, detect again).

use std::path::Path;
use std::process::Command as StdCommand;

use assert_cmd::Command;
use hostio::HostRoot;
use predicates::prelude::*;

fn bin() -> Command {
    Command::cargo_bin("gpu-vm-bootstrap").expect("binary builds")
}

fn detect_json(root: &Path) -> serde_json::Value {
    let out = bin()
        .args(["detect", "--json", "--host-root"])
        .arg(root)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).expect("detect --json prints JSON")
}

#[test]
fn json_matches_the_library_and_the_contract() {
    let host = fixture_builder::build_host("amd-b550m-gt710-rtx2070s");
    let json = detect_json(host.path());
    let lib = serde_json::to_value(hwdetect::detect(&HostRoot::new(host.path()))).unwrap();
    assert_eq!(json, lib);

    assert_eq!(json["os"]["id"], "ubuntu");
    assert_eq!(json["cpu"]["vendor"], "amd");
    assert_eq!(json["cpu"]["virtualization"], "svm");
    assert_eq!(json["kvm"]["available"], true);
    assert_eq!(json["iommu"]["enabled"], true);
    assert_eq!(json["iommu"]["group_count"], 20);
    let gpus = json["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 2);
    assert_eq!(gpus[0]["bdf"], "0000:04:00.0");
    assert_eq!(gpus[0]["isolated"], false);
    assert_eq!(
        gpus[0]["group_blockers"],
        serde_json::json!(["0000:02:00.0", "0000:02:00.1", "0000:2a:00.0"])
    );
    assert_eq!(gpus[1]["bdf"], "0000:2b:00.0");
    assert_eq!(gpus[1]["vendor_id"], "10de");
    assert_eq!(gpus[1]["device_id"], "1e84");
    assert_eq!(gpus[1]["class"], "0300");
    assert_eq!(gpus[1]["iommu_group"], 14);
    assert_eq!(gpus[1]["isolated"], true);
    assert_eq!(gpus[1]["functions"].as_array().unwrap().len(), 4);
    assert_eq!(json["nics"][0]["name"], "enp42s0");
    assert_eq!(json["nics"][0]["default_route"], true);
}

#[test]
fn json_without_groups_has_null_isolation() {
    let host = fixture_builder::build_host("amd-ryzen-gtx1080ti-nogroups");
    let json = detect_json(host.path());
    assert_eq!(json["iommu"]["enabled"], false);
    assert_eq!(json["gpus"][0]["isolated"], serde_json::Value::Null);
    assert_eq!(json["gpus"][0]["iommu_group"], serde_json::Value::Null);
}

#[test]
fn human_view_is_a_table() {
    let host = fixture_builder::build_host("amd-b550m-gt710-rtx2070s");
    let out = bin()
        .args(["detect", "--host-root"])
        .arg(host.path())
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    insta::assert_snapshot!("detect_b550_table", text);
    assert!(text.starts_with("GPU "));
    assert!(text.contains("TU104 [GeForce RTX 2070 SUPER]"));
}

#[test]
fn hgx_counts_no_nvswitch_as_gpu() {
    let host = fixture_builder::build_host("hgx-h200x8-nvswitch-truncated");
    let json = detect_json(host.path());
    assert_eq!(json["gpus"].as_array().unwrap().len(), 8);
    assert_eq!(
        json["nvswitches"],
        serde_json::json!(["0000:05:00.0", "0000:06:00.0"])
    );
}

#[test]
fn completed_hgx_shows_its_four_nvswitches_with_groups_in_json_and_text() {
    let host = fixture_builder::build_host("hgx-h200x8-nvswitch");
    let json = detect_json(host.path());
    assert_eq!(json["gpus"].as_array().unwrap().len(), 8);
    let switches = json["nvswitch_devices"].as_array().unwrap();
    let rows: Vec<(String, u64, String)> = switches
        .iter()
        .map(|s| {
            (
                s["bdf"].as_str().unwrap().to_string(),
                s["iommu_group"].as_u64().unwrap(),
                s["driver"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, u64, String)> = ["05", "06", "07", "08"]
        .iter()
        .map(|b| (format!("0000:{b}:00.0"), 114, "nvidia-nvswitch".to_string()))
        .collect();
    assert_eq!(rows, want);
    assert_eq!(json["fabric_manager"]["shared_nvswitch"], false);

    let out = bin()
        .args(["detect", "--host-root"])
        .arg(host.path())
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        text.contains("  0000:08:00.0  GH100 [H100 NVSwitch]  group 114, driver nvidia-nvswitch"),
        "{text}"
    );
    assert!(
        text.contains("fabric manager: not running, FABRIC_MODE unknown: full passthrough"),
        "{text}"
    );
}

#[test]
fn shared_nvswitch_host_says_so_in_detect() {
    let host = fixture_builder::build_host("synthetic-hgx-shared-nvswitch");
    let json = detect_json(host.path());
    assert_eq!(
        json["fabric_manager"],
        serde_json::json!({
            "config": "/usr/share/nvidia/nvswitch/fabricmanager.cfg",
            "fabric_mode": 1,
            "pid": 4242,
            "shared_nvswitch": true
        })
    );
    let out = bin()
        .args(["detect", "--host-root"])
        .arg(host.path())
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        text.contains(
            "fabric manager: running (pid 4242), FABRIC_MODE 1: Shared NVSwitch multitenancy"
        ),
        "{text}"
    );
}

#[test]
fn broken_files_are_warnings_on_stderr_not_failures() {
    let host = fixture_builder::build_host("synthetic-broken-files");
    bin()
        .args(["detect", "--json", "--host-root"])
        .arg(host.path())
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "warning: /sys/bus/pci/devices/0000:03:00.0/class: malformed value",
        ))
        .stderr(predicate::str::contains(
            "warning: /sys/bus/pci/devices/0000:01:00.1/vendor: cannot read",
        ))
        .stdout(predicate::str::contains("\"gpus\""));
}

#[test]
fn missing_host_root_is_refused() {
    bin()
        .args(["detect", "--host-root", "/nonexistent/gvb-host-root"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("host-root"));
}

#[test]
fn capture_round_trips_through_tar() {
    for name in ["synthetic-vfio-bound", "amd-b550m-gt710-rtx2070s"] {
        let host = fixture_builder::build_host(name);
        let work = tempfile::tempdir().unwrap();
        let archive = work.path().join("capture.tar.gz");
        bin()
            .args(["detect", "--host-root"])
            .arg(host.path())
            .arg("--capture")
            .arg(&archive)
            .assert()
            .success()
            .stderr(predicate::str::contains("entries to"));
        let x = work.path().join("x");
        std::fs::create_dir(&x).unwrap();
        let status = StdCommand::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(&x)
            .status()
            .expect("tar runs");
        assert!(status.success(), "tar -xzf failed");
        assert_eq!(detect_json(&x), detect_json(host.path()), "{name}");
    }
}

/// The human view of every fixture host: one table layout (`clikit::table`, widths in terminal
/// columns), each GPU's functions under its row, then the summary lines.
#[test]
fn table_view_of_every_fixture_host() {
    for host in fixture_builder::host_names() {
        let tree = fixture_builder::build_host(&host);
        let out = bin()
            .args(["detect", "--host-root"])
            .arg(tree.path())
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        insta::assert_snapshot!(format!("{host}.table"), String::from_utf8(out).unwrap());
    }
}
