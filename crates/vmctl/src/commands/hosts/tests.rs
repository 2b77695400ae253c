use super::*;
use hostio::{Output, RecordingRunner};

fn entry(name: &str, ssh: &str) -> HostEntry {
    HostEntry::new(name, ssh)
}

#[test]
fn status_json_has_the_documented_shape() {
    let mut local = HostRow::empty(LOCAL, None);
    local.reachable = true;
    local.gpus = vec![HostGpu {
        bdf: "0000:41:00.0".into(),
        name: "NVIDIA A100 80GB PCIe".into(),
        driver: Some("vfio-pci".into()),
        isolated: Some(true),
        vm: Some("vm1".into()),
    }];
    local.bridge = Some(HostBridge {
        name: "br0".into(),
        subnet: "198.18.2.0/24".into(),
        free: 250,
        used: 3,
        conflicts: 0,
        scanned_at: 1765000000,
    });
    local.vms = vec![HostVm {
        name: "vm1".into(),
        state: "running".into(),
    }];
    let mut gone = HostRow::empty("gone", Some("lab@198.18.0.250"));
    gone.error = Some(RowError {
        message: "m".into(),
        help: vec!["h".into()],
    });
    let v = serde_json::to_value(Status::new(vec![local, gone])).unwrap();
    let keys =
        |o: &serde_json::Value| -> Vec<String> { o.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&v), ["hosts", "reachable", "unreachable"]);
    assert_eq!(v["reachable"], 1);
    assert_eq!(v["unreachable"], 1);
    let row_keys = [
        "name",
        "ssh",
        "reachable",
        "error",
        "elapsed_ms",
        "vmctl_version",
        "bootstrap_version",
        "version_mismatch",
        "cpus",
        "memory_bytes",
        "memory_available_bytes",
        "gpus",
        "gpus_free",
        "gpus_used",
        "vms",
        "bridge",
        "addresses_held",
    ];
    assert_eq!(keys(&v["hosts"][0]), row_keys);
    assert_eq!(keys(&v["hosts"][1]), row_keys);
    assert_eq!(
        keys(&v["hosts"][0]["gpus"][0]),
        ["bdf", "name", "driver", "isolated", "vm"]
    );
    assert_eq!(
        keys(&v["hosts"][0]["bridge"]),
        ["name", "subnet", "free", "used", "conflicts", "scanned_at"]
    );
    assert_eq!(keys(&v["hosts"][0]["vms"][0]), ["name", "state"]);
    assert_eq!(keys(&v["hosts"][1]["error"]), ["message", "help"]);
    assert!(v["hosts"][1]["cpus"].is_null());
    assert!(v["hosts"][0]["ssh"].is_null());
    // What a remote host prints is read back into the same rows.
    let back: Status = serde_json::from_value(v).unwrap();
    assert_eq!(back.hosts.len(), 2);
}

#[test]
fn free_gpus_are_isolated_vfio_ones_no_vm_holds() {
    let g = |driver: &str, isolated, vm: Option<&str>| HostGpu {
        bdf: String::new(),
        name: String::new(),
        driver: Some(driver.into()),
        isolated,
        vm: vm.map(str::to_string),
    };
    let gpus = [
        g("vfio-pci", Some(true), None),
        g("vfio-pci", Some(true), Some("vm1")),
        g("nvidia", Some(true), None),
        g("vfio-pci", Some(false), None),
    ];
    assert_eq!(gpu_counts(&gpus), (1, 1));
}

#[test]
fn cpu_and_memory_come_from_proc_under_the_host_root() {
    let dir = tempfile::tempdir().unwrap();
    let host = HostRoot::new(dir.path());
    host.write_atomic(
        "/proc/cpuinfo",
        b"processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\nmodel name\t: x\n",
        0o644,
    )
    .unwrap();
    host.write_atomic(
        "/proc/meminfo",
        b"MemTotal:       32768000 kB\nMemFree:  1 kB\nMemAvailable:   20000000 kB\n",
        0o644,
    )
    .unwrap();
    assert_eq!(
        cpu_memory(&host),
        (Some(2), Some(32768000 * 1024), Some(20000000 * 1024))
    );
    assert_eq!(
        cpu_memory(&HostRoot::new(dir.path().join("none"))),
        (None, None, None)
    );
}

#[test]
fn remote_rows_come_from_the_hosts_own_status_or_say_why_not() {
    let mut remote = HostRow::empty(LOCAL, None);
    remote.reachable = true;
    remote.vmctl_version = Some("0.0.1".into());
    remote.cpus = Some(4);
    let json = serde_json::to_vec(&Status::new(vec![remote])).unwrap();
    let runner = RecordingRunner::new().answer(["timeout"], Output::ok(json));
    let e = entry("gpu2", "admin@gpu2.lan");
    let row = remote_row(&runner, &e, 5);
    assert!(row.reachable);
    assert_eq!(row.name, "gpu2");
    assert_eq!(row.ssh.as_deref(), Some("admin@gpu2.lan"));
    assert_eq!(row.cpus, Some(4));
    assert!(row.version_mismatch);
    let argv = &runner.calls()[0];
    assert_eq!(&argv[..5], ["timeout", "-k", "2", "35", "ssh"]);
    assert_eq!(
        argv.last().unwrap(),
        "'vmctl' '--json' 'hosts' 'status' '--local'"
    );

    let runner = RecordingRunner::new().answer(
        ["timeout"],
        Output::failed(
            255,
            "ssh: connect to host 198.18.0.250 port 22: Connection timed out\n",
        ),
    );
    let row = remote_row(&runner, &entry("gone", "lab@198.18.0.250"), 5);
    assert!(!row.reachable);
    assert_eq!(
        row.error.unwrap().message,
        "ssh lab@198.18.0.250: connect timed out after 5 s"
    );

    let runner = RecordingRunner::new().answer(
        ["timeout"],
        Output::failed(255, "lab@h: Permission denied (publickey).\n"),
    );
    let row = remote_row(&runner, &entry("h", "lab@h"), 5);
    assert_eq!(
        row.error.unwrap().message,
        "ssh lab@h: lab@h: Permission denied (publickey)."
    );

    let runner = RecordingRunner::new().answer(["timeout"], Output::failed(124, ""));
    let row = remote_row(&runner, &entry("h", "h"), 5);
    assert_eq!(row.error.unwrap().message, "ssh h: no answer within 35 s");
}

#[test]
fn collect_puts_local_first_then_the_hosts_in_name_order_and_counts_them() {
    // Answers are used once each, in whichever order the threads ask.
    let runner = RecordingRunner::new()
        .answer(["timeout"], Output::failed(255, "ssh: nope\n"))
        .answer(["timeout"], Output::failed(255, "ssh: nope\n"));
    let hosts: BTreeMap<String, HostEntry> = [entry("b", "hb"), entry("a", "ha")]
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect();
    let st = collect(&runner, &hosts, 3, || {
        let mut l = HostRow::empty(LOCAL, None);
        l.reachable = true;
        l
    });
    let names: Vec<_> = st.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["local", "a", "b"]);
    assert_eq!((st.reachable, st.unreachable), (1, 2));
    assert_eq!(runner.calls().len(), 2);
    let failed = st.hosts.iter().filter(|h| !h.reachable).count();
    assert_eq!(failed, 2);
    assert!(
        st.hosts[1]
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("ssh ha: ssh: nope")
    );
}
