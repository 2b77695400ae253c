//! `vmctl metrics serve` against the lab's real libvirtd, scraped by real clients: curl, then
//! `promtool check metrics` on the body, then a real Prometheus server (Debian's, on loopback
//! in the lab's network namespace, the exporter's too: loopback is per namespace) with a
//! generated scrape config, asked through its HTTP API until the target is `up` and the VM's
//! state series is there. The VM is defined (`--no-start`, address 198.18.0.190), then started
//! only long enough for qemu's counters to show (no wait for the guest), and powered off. Run
//! as root with GVB_LAB=1 and the lab up; without GVB_LAB=1 it prints "skipped".
#![allow(clippy::unwrap_used)] // test helpers: a failed setup should panic

#[path = "lab_support.rs"]
mod lab_support;
#[path = "metrics_support.rs"]
mod metrics_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lab_support::{Vm, create_lab_vm, lab_image_dir, scratch, text, vmctl};
use metrics_support::{Exporter, promtool_check};

const VM: &str = "metrics1";

/// A process killed (and reaped) on drop: Prometheus.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl -sf URL` inside the lab namespace: the body, or `None` on any failure.
fn curl(url: &str) -> Option<String> {
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            "vmlab",
            "curl",
            "-sf",
            "--max-time",
            "5",
            url,
        ])
        .output()
        .unwrap();
    o.status.success().then(|| text(&o.stdout))
}

/// Polls `f` every 200 ms until it gives a value or `within` passes.
fn poll<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn define(tmp: &Path) {
    let o = create_lab_vm(
        tmp,
        &lab_image_dir(),
        VM,
        "198.18.0.190/24",
        &["--no-start"],
    );
    assert!(
        o.status.success(),
        "create --no-start: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

#[test]
#[ignore = "lab: root and the lab libvirtd; run with GVB_LAB=1 and --include-ignored"]
fn a_real_prometheus_scrapes_the_exporter_and_sees_the_vm_state() {
    if std::env::var("GVB_LAB").as_deref() != Ok("1") {
        eprintln!("skipped: needs the lab (GVB_LAB=1, root)");
        return;
    }
    let started = Instant::now();
    let tmp = scratch();
    let t = tmp.path();
    let vm = Vm {
        name: VM.into(),
        tmp: t,
    };
    define(t);
    eprintln!(
        "defined {} in {:.1} s",
        vm.name,
        started.elapsed().as_secs_f64()
    );

    // The exporter, in the lab namespace on the lab's libvirtd.
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", "vmlab"])
        .arg(env!("CARGO_BIN_EXE_vmctl"))
        .args(["--connect", "qemu:///system", "--config"])
        .arg(t.join("config.toml"))
        .args(["metrics", "serve", "--listen", "127.0.0.1:0"])
        .env("VMCTL_STORAGE_DIR", t.join("vms"))
        .env("VMCTL_STATE_DIR", t.join("state"))
        .env("VMCTL_IMAGE_CACHE", t.join("images"))
        .env_remove("VMCTL_LOG");
    let mut exporter = Exporter::spawn(cmd);
    let target = exporter.addr.to_string();

    // curl, then promtool on what it got.
    let t0 = Instant::now();
    let body = curl(&format!("http://{target}/metrics")).expect("curl /metrics");
    eprintln!("curl scrape: {} ms", t0.elapsed().as_millis());
    eprintln!(
        "scrape sample:\n{}",
        body.lines()
            .filter(|l| l.contains(VM)
                || l.starts_with("vmctl_libvirt_up")
                || l.starts_with("vmctl_build_info"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    promtool_check(&body);
    for line in [
        "vmctl_libvirt_up 1".to_string(),
        format!("vmctl_vm_state{{vm=\"{VM}\",state=\"shut_off\"}} 1"),
        format!("vmctl_vm_running{{vm=\"{VM}\"}} 0"),
        format!("vmctl_vm_vcpus{{vm=\"{VM}\"}} 2"),
        format!("vmctl_vm_memory_bytes{{vm=\"{VM}\"}} 1073741824"),
        format!("vmctl_vm_info{{vm=\"{VM}\",os=\"ubuntu\",cluster=\"\",role=\"\"}} 1"),
    ] {
        assert!(body.lines().any(|l| l == line), "{line} missing:\n{body}");
    }
    assert!(
        !body.contains(&format!("vmctl_vm_cpu_seconds_total{{vm=\"{VM}\"}}")),
        "a stopped VM has no CPU time sample"
    );

    // A real Prometheus, scraping every second, in the same namespace.
    let port = 20_000 + std::process::id() % 10_000;
    let config = serde_json::json!({
        "global": { "scrape_interval": "1s", "scrape_timeout": "1s" },
        "scrape_configs": [{
            "job_name": "vmctl",
            "static_configs": [{ "targets": [target] }],
        }],
    });
    let config_path = t.join("prometheus.yml");
    std::fs::write(&config_path, serde_yaml::to_string(&config).unwrap()).unwrap();
    let log = std::fs::File::create(t.join("prometheus.log")).unwrap();
    let _prometheus = Killed(
        Command::new("ip")
            .args(["netns", "exec", "vmlab", "prometheus"])
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", t.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let p0 = Instant::now();
    let health = poll(
        "the target up in Prometheus",
        Duration::from_secs(30),
        || {
            let v: serde_json::Value =
                serde_json::from_str(&curl(&format!("{api}/targets"))?).ok()?;
            let t = v["data"]["activeTargets"]
                .as_array()?
                .iter()
                .find(|t| t["labels"]["job"] == "vmctl")?
                .clone();
            (t["health"] == "up").then_some(t)
        },
    );
    eprintln!(
        "Prometheus: target up after {:.1} s (scrapeUrl {}, lastScrapeDuration {})",
        p0.elapsed().as_secs_f64(),
        health["scrapeUrl"],
        health["lastScrapeDuration"]
    );
    let query = format!("vmctl_vm_state{{vm=\"{VM}\",state=\"shut_off\"}}");
    let result = poll(
        "the VM's state series in Prometheus",
        Duration::from_secs(20),
        || {
            let out = Command::new("ip")
                .args(["netns", "exec", "vmlab", "curl", "-sfG", "--max-time", "5"])
                .arg(format!("{api}/query"))
                .args(["--data-urlencode", &format!("query={query}")])
                .output()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let r = v["data"]["result"].as_array()?.first()?.clone();
            Some(r)
        },
    );
    eprintln!("Prometheus query {query}: {result}");
    assert_eq!(result["metric"]["job"], "vmctl");
    assert_eq!(result["value"][1], "1", "{result}");

    // Started (no wait for the guest: qemu's counters are there at once), the counters
    // appear; then it is powered off again.
    let o = vmctl(t, &["start", VM]);
    assert!(o.status.success(), "start: {}", text(&o.stderr));
    let running = poll("the running VM's counters", Duration::from_secs(20), || {
        let body = curl(&format!("http://{target}/metrics"))?;
        (body.contains(&format!("vmctl_vm_running{{vm=\"{VM}\"}} 1"))
            && body.contains(&format!("vmctl_vm_cpu_seconds_total{{vm=\"{VM}\"}}")))
        .then_some(body)
    });
    promtool_check(&running);
    eprintln!(
        "running:\n{}",
        running
            .lines()
            .filter(|l| l.contains(&format!("vm=\"{VM}\"")) && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for family in [
        "vmctl_vm_cpu_seconds_total",
        "vmctl_vm_memory_resident_bytes",
        "vmctl_vm_disk_read_bytes_total",
        "vmctl_vm_disk_written_bytes_total",
        "vmctl_vm_network_receive_bytes_total",
        "vmctl_vm_network_transmit_bytes_total",
    ] {
        assert!(
            running.contains(&format!("{family}{{vm=\"{VM}\"}} ")),
            "{family} missing for the running VM:\n{running}"
        );
    }
    let query = format!("vmctl_vm_running{{vm=\"{VM}\"}} == 1");
    poll(
        "the VM running in Prometheus",
        Duration::from_secs(20),
        || {
            let out = Command::new("ip")
                .args(["netns", "exec", "vmlab", "curl", "-sfG", "--max-time", "5"])
                .arg(format!("{api}/query"))
                .args(["--data-urlencode", &format!("query={query}")])
                .output()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            v["data"]["result"].as_array()?.first().cloned()
        },
    );
    let _ = Command::new("virsh")
        .args(["-c", "qemu:///system", "destroy", VM])
        .output();

    assert_eq!(
        exporter.terminate().code(),
        Some(0),
        "a clean stop on SIGTERM"
    );
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
}
