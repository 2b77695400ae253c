//! `vmctl hosts …` and `vmctl --host NAME …` against a fake `ssh` first on PATH: a script that
//! records its argv and runs the REMOTE string with `sh -c`, so the remote side is this build's
//! vmctl, with its own host root (`VMCTL_HOST_ROOT`, set by the fake) and libvirt's test driver.
//! It never connects anywhere. Per destination, a mode file makes it act like ssh to a host
//! that does not answer (ConnectTimeout: sleep, then ssh's message and exit 255), or wait for
//! another host's fake ssh to start (proof that hosts are asked at once).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use assert_cmd::Command;

const FAKE_SSH: &str = r#"#!/bin/sh
# A stand-in for ssh: never connects. argv: OPTIONS -- DEST REMOTE.
dir="$FAKE_SSH_DIR"
dest=""; remote=""; timeout=5; seen=""
for a in "$@"; do
  if [ -n "$seen" ]; then
    if [ -z "$dest" ]; then dest="$a"; else remote="$a"; fi
  else
    case "$a" in
      --) seen=1 ;;
      ConnectTimeout=*) timeout="${a#ConnectTimeout=}" ;;
    esac
  fi
done
host="${dest#*@}"
{ for a in "$@"; do printf '%s\n' "$a"; done; printf '%s\n' "----"; } >> "$dir/$host.argv"
mode=""; [ -f "$dir/$host.mode" ] && mode=$(cat "$dir/$host.mode")
case "$mode" in
  timeout)
    sleep "$timeout"
    echo "ssh: connect to host $host port 22: Connection timed out" >&2
    exit 255 ;;
  wait:*)
    other="${mode#wait:}"
    : > "$dir/$host.started"
    i=0
    while [ ! -f "$dir/$other.started" ]; do
      i=$((i + 1))
      if [ "$i" -gt 200 ]; then
        echo "ssh: fake: $other never started" >&2
        exit 255
      fi
      sleep 0.1
    done ;;
esac
VMCTL_HOST_ROOT="$dir/remote-root" exec sh -c "$remote"
"#;

/// A scratch world: the fake ssh, a local host root, a remote host root, a config file.
struct World {
    tmp: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let w = World { tmp };
        std::fs::create_dir_all(w.path("bin")).unwrap();
        write_exec(&w.path("bin/ssh"), FAKE_SSH);
        for root in ["local-root", "remote-root"] {
            std::fs::create_dir_all(w.path(&format!("{root}/proc"))).unwrap();
        }
        std::fs::write(
            w.path("remote-root/proc/cpuinfo"),
            "processor\t: 0\nprocessor\t: 1\nprocessor\t: 2\n",
        )
        .unwrap();
        std::fs::write(
            w.path("remote-root/proc/meminfo"),
            "MemTotal:  4096 kB\nMemAvailable:  1024 kB\n",
        )
        .unwrap();
        w
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn config(&self) -> PathBuf {
        self.path("config.toml")
    }

    fn vmctl(&self) -> Command {
        let mut c = Command::cargo_bin("vmctl").unwrap();
        for k in [
            "VMCTL_BRIDGE",
            "VMCTL_STORAGE_DIR",
            "VMCTL_IMAGE_CACHE",
            "VMCTL_STATE_DIR",
            "VMCTL_SSH_KEY",
            "VMCTL_SSH_CONNECT_TIMEOUT",
        ] {
            c.env_remove(k);
        }
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("PATH", path)
            .env("FAKE_SSH_DIR", self.tmp.path())
            .env("VMCTL_HOST_ROOT", self.path("local-root"))
            .env("VMCTL_CONNECT", "test:///default")
            .arg("--config")
            .arg(self.config());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.vmctl().args(args).output().unwrap()
    }

    /// `hosts add NAME --ssh DEST --vmctl THIS-BUILD --no-check` plus `extra`.
    fn add(&self, name: &str, dest: &str, extra: &[&str]) {
        let vmctl = assert_cmd::cargo::cargo_bin("vmctl");
        let mut args = vec!["hosts", "add", name, "--ssh", dest, "--no-check"];
        let v = vmctl.to_str().unwrap();
        args.extend(["--vmctl", v]);
        args.extend(extra);
        let out = self.run(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    fn mode(&self, host: &str, mode: &str) {
        std::fs::write(self.path(&format!("{host}.mode")), mode).unwrap();
    }

    /// The argv of every fake ssh run for `host`, one Vec per run.
    fn ssh_runs(&self, host: &str) -> Vec<Vec<String>> {
        let log = std::fs::read_to_string(self.path(&format!("{host}.argv"))).unwrap_or_default();
        log.split_terminator("----\n")
            .map(|run| run.lines().map(str::to_string).collect())
            .collect()
    }
}

fn write_exec(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

#[test]
fn host_flag_runs_the_command_with_the_remote_vmctl_and_passes_output_and_exit_code_through() {
    let w = World::new();
    w.add("gpu2", "lab@198.18.0.9", &["--port", "2222"]);
    let out = w.run(&["--host", "gpu2", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = json(&out);
    assert_eq!(v["uri"], "test:///default");
    assert_eq!(v["vms"][0]["name"], "test");
    let runs = w.ssh_runs("198.18.0.9");
    assert_eq!(runs.len(), 1);
    let argv = &runs[0];
    let vmctl = assert_cmd::cargo::cargo_bin("vmctl");
    let expected = [
        "-p",
        "2222",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=5",
        "-T",
        "--",
        "lab@198.18.0.9",
    ];
    assert_eq!(&argv[..expected.len()], expected);
    // --config and --host name this machine's things: the remote gets neither.
    assert_eq!(
        argv[expected.len()],
        format!("'{}' 'list' '--json'", vmctl.display())
    );

    // A refusal there is a refusal here: exit 2, its message on stderr; the same versions
    // give no note. A word with a shell's specials reaches the remote vmctl as one word.
    let marker = w.path("pwned");
    let name = format!("x $(touch {}) 'y\nz", marker.display());
    let out = w.run(&["info", &name, "--host", "gpu2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(!stderr.contains("note: host"), "{stderr}");
    assert!(!marker.exists());
    // The setting sets ssh's connect timeout.
    let out = w
        .vmctl()
        .env("VMCTL_SSH_CONNECT_TIMEOUT", "9")
        .args(["--host=gpu2", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // (The refusal above asked the remote version once more: exit 2.)
    let runs = w.ssh_runs("198.18.0.9");
    assert_eq!(runs.len(), 4);
    assert!(runs[2].last().unwrap().ends_with("' '--version'"));
    assert!(runs[3].contains(&"ConnectTimeout=9".to_string()));
}

#[test]
fn exit_2_from_a_remote_vmctl_of_another_version_prints_the_upgrade_note() {
    let w = World::new();
    let old = w.path("old-vmctl");
    write_exec(
        &old,
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'vmctl 0.0.7 (abc1234)'; exit 0; fi\necho \"error: unrecognized subcommand '$2'\" >&2\nexit 2\n",
    );
    let out = w.run(&[
        "hosts",
        "add",
        "old",
        "--ssh",
        "198.18.0.7",
        "--no-check",
        "--sudo",
        "--vmctl",
        old.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // sudo = true: the fake runs `sudo -n -- PROG …`; a sudo on PATH that only drops its
    // options stands in for the real one.
    write_exec(
        &w.path("bin/sudo"),
        "#!/bin/sh\n[ \"$1\" = -n ] || exit 99\n[ \"$2\" = -- ] || exit 98\nshift 2\nexec \"$@\"\n",
    );
    let out = w.run(&["--host", "old", "--json", "hosts-like"]);
    // clap refuses an unknown subcommand locally before anything is forwarded.
    assert_eq!(out.status.code(), Some(2));
    assert!(w.ssh_runs("198.18.0.7").is_empty());
    let out = w.run(&["--host", "old", "gpu", "status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unrecognized subcommand"), "{stderr}");
    let ours = env!("CARGO_PKG_VERSION");
    assert!(
        stderr.contains(&format!(
            "note: host old runs vmctl 0.0.7, this machine runs {ours}"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("sudo apt-get install ./vmctl_{ours}_amd64.deb")),
        "{stderr}"
    );
    let runs = w.ssh_runs("198.18.0.7");
    assert_eq!(runs.len(), 2);
    assert!(runs[0].last().unwrap().starts_with("'sudo' '-n' '--' '"));
    assert!(runs[1].last().unwrap().ends_with("' '--version'"));
}

#[test]
fn hosts_add_is_refused_and_writes_nothing_when_the_check_fails() {
    let w = World::new();
    let original = "# my settings\nbridge = \"br1\"\n";
    std::fs::write(w.config(), original).unwrap();
    w.mode("198.18.0.250", "timeout");
    let out = w
        .vmctl()
        .env("VMCTL_SSH_CONNECT_TIMEOUT", "1")
        .args(["hosts", "add", "gone", "--ssh", "lab@198.18.0.250"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Connection timed out"), "{stderr}");
    assert!(stderr.contains("--no-check"), "{stderr}");
    assert_eq!(std::fs::read_to_string(w.config()).unwrap(), original);

    // A host that answers is added; the comments stay.
    let vmctl = assert_cmd::cargo::cargo_bin("vmctl");
    let out = w.run(&[
        "hosts",
        "add",
        "gpu2",
        "--ssh",
        "admin@198.18.0.9",
        "--vmctl",
        vmctl.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(w.config()).unwrap();
    assert!(written.starts_with(original), "{written}");
    assert!(
        written.contains("[hosts.gpu2]\nssh = \"admin@198.18.0.9\"\n"),
        "{written}"
    );
    // Twice: refused, pointing at `hosts remove`.
    let out = w.run(&["hosts", "add", "gpu2", "--ssh", "x", "--no-check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("vmctl hosts remove gpu2"));
    // Bad input: refused before ssh is run.
    let out = w.run(&["hosts", "add", "local", "--ssh", "x", "--no-check"]);
    assert_eq!(out.status.code(), Some(2));
    let out = w.run(&["hosts", "add", "ok", "--ssh=-oProxyCommand=x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(w.ssh_runs("x").is_empty());
    assert_eq!(w.ssh_runs("-oProxyCommand=x").len(), 0);
}

#[test]
fn hosts_list_and_remove_edit_the_config_file() {
    let w = World::new();
    w.add(
        "gpu2",
        "admin@198.18.0.9",
        &["--port", "2222", "--identity", "/root/.ssh/id_gpu2"],
    );
    w.add("gpu3", "198.18.0.10", &["--sudo"]);
    let v = json(&w.run(&["hosts", "list", "--json"]));
    let vmctl = assert_cmd::cargo::cargo_bin("vmctl");
    assert_eq!(
        v,
        serde_json::json!({"hosts": [
            {"name": "gpu2", "ssh": "admin@198.18.0.9", "port": 2222,
             "identity": "/root/.ssh/id_gpu2", "sudo": false, "vmctl": vmctl.to_str().unwrap(),
             "uri": "qemu+ssh://admin@198.18.0.9:2222/system?keyfile=/root/.ssh/id_gpu2"},
            {"name": "gpu3", "ssh": "198.18.0.10", "port": null, "identity": null,
             "sudo": true, "vmctl": vmctl.to_str().unwrap(),
             "uri": "qemu+ssh://198.18.0.10/system"},
        ]})
    );
    let out = w.run(&["hosts", "list"]);
    assert!(
        text(&out.stdout).starts_with("NAME  SSH"),
        "{}",
        text(&out.stdout)
    );
    let out = w.run(&["hosts", "remove", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("(configured: gpu2, gpu3)"));
    assert!(w.run(&["hosts", "remove", "gpu2"]).status.success());
    assert!(w.run(&["hosts", "remove", "gpu3"]).status.success());
    let left = std::fs::read_to_string(w.config()).unwrap();
    assert!(!left.contains("[hosts"), "{left}");
    let v = json(&w.run(&["hosts", "list", "--json"]));
    assert_eq!(v, serde_json::json!({"hosts": []}));
}

#[test]
fn host_flag_refuses_unknown_hosts_and_the_local_only_commands() {
    let w = World::new();
    w.add("gpu2", "198.18.0.9", &[]);
    let out = w.run(&["--host", "gpu9", "list"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("(configured: gpu2)"), "{stderr}");
    assert!(stderr.contains("vmctl hosts add"), "{stderr}");
    for args in [
        &["--host", "gpu2", "hosts", "list"][..],
        &["--host", "gpu2", "config", "show"],
    ] {
        let out = w.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    assert!(w.ssh_runs("198.18.0.9").is_empty());
    // `local` is this machine: no ssh at all.
    let out = w.run(&["--host", "local", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&out)["vms"][0]["name"], "test");
    assert!(w.ssh_runs("198.18.0.9").is_empty());
}

#[test]
fn an_unreachable_host_costs_its_connect_timeout_and_shows_as_unreachable() {
    let w = World::new();
    w.add("gpu2", "lab@198.18.0.9", &[]);
    w.add("gone", "lab@198.18.0.250", &[]);
    w.mode("198.18.0.250", "timeout");
    let started = Instant::now();
    let out = w.run(&["hosts", "status", "--json", "--timeout", "1"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v = json(&out);
    assert_eq!(v["reachable"], 2);
    assert_eq!(v["unreachable"], 1);
    let names: Vec<_> = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["local", "gone", "gpu2"]);
    let gone = &v["hosts"][1];
    assert_eq!(gone["reachable"], false);
    assert_eq!(gone["ssh"], "lab@198.18.0.250");
    assert_eq!(
        gone["error"]["message"],
        "ssh lab@198.18.0.250: connect timed out after 1 s"
    );
    assert!(gone["elapsed_ms"].as_u64().unwrap() >= 1000);
    assert!(gone["cpus"].is_null());
    let gpu2 = &v["hosts"][2];
    assert_eq!(gpu2["reachable"], true);
    assert_eq!(gpu2["cpus"], 3);
    assert_eq!(gpu2["memory_bytes"], 4096 * 1024);
    assert_eq!(gpu2["memory_available_bytes"], 1024 * 1024);
    assert_eq!(
        gpu2["vms"][0],
        serde_json::json!({"name": "test", "state": "running"})
    );
    assert_eq!(gpu2["vmctl_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(gpu2["version_mismatch"], false);
    assert_eq!(v["hosts"][0]["ssh"], serde_json::Value::Null);
    // The remote row is the host's own `hosts status --local`.
    assert!(
        w.ssh_runs("198.18.0.9")[0]
            .last()
            .unwrap()
            .ends_with("' '--json' 'hosts' 'status' '--local'")
    );
    // Well under the per-host deadline (connect timeout + 30 s): the timeout, not the deadline.
    assert!(took < Duration::from_secs(25), "{took:?}");

    // The table says the same, and the reason.
    let out = w.run(&["hosts", "status", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let table = text(&out.stdout);
    assert!(table.contains("gone   unreachable"), "{table}");
    assert!(
        table.contains("gone: ssh lab@198.18.0.250: connect timed out after 1 s"),
        "{table}"
    );
}

#[test]
fn hosts_are_asked_at_once_not_one_after_another() {
    // Each fake ssh waits until the other one has started (up to 20 s, then fails as
    // unreachable): asked one after the other, the first would never see the second.
    let w = World::new();
    w.add("a", "198.18.0.11", &[]);
    w.add("b", "198.18.0.12", &[]);
    w.mode("198.18.0.11", "wait:198.18.0.12");
    w.mode("198.18.0.12", "wait:198.18.0.11");
    let out = w.run(&["hosts", "status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let v = json(&out);
    assert_eq!(v["reachable"], 3);
    assert_eq!(v["unreachable"], 0);
    assert!(w.path("198.18.0.11.started").exists());
    assert!(w.path("198.18.0.12.started").exists());
}

#[test]
fn hosts_status_local_is_this_machines_row_only() {
    let w = World::new();
    w.add("gpu2", "198.18.0.9", &[]);
    std::fs::write(w.path("local-root/proc/cpuinfo"), "processor\t: 0\n").unwrap();
    let out = w.run(&["hosts", "status", "--local", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = json(&out);
    assert_eq!(v["hosts"].as_array().unwrap().len(), 1);
    assert_eq!(v["hosts"][0]["name"], "local");
    assert_eq!(v["hosts"][0]["cpus"], 1);
    assert!(w.ssh_runs("198.18.0.9").is_empty());
}

#[test]
fn a_remote_connect_without_host_warns_that_host_facts_are_local() {
    let w = World::new();
    std::fs::write(w.config(), "").unwrap();
    // An interval top refuses before libvirt is asked: nothing connects.
    let out = w.run(&[
        "--connect",
        "qemu+ssh://lab@198.18.0.250/system",
        "top",
        "--once",
        "--interval",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("warning:").count(), 1, "{stderr}");
    assert!(stderr.contains("host facts (GPUs"), "{stderr}");
    assert!(stderr.contains("vmctl --host NAME"), "{stderr}");
    let out = w.run(&["top", "--once", "--interval", "0"]);
    assert!(!text(&out.stderr).contains("warning:"));
}

/// `cluster create --hosts`: what the hosts cannot take is refused after asking them and before
/// anything is made (no cluster directory here, no VM there), each refusal naming why.
#[test]
fn cluster_create_across_hosts_refuses_before_making_anything() {
    let w = World::new();
    w.add("gpu2", "lab@198.18.0.9", &[]);
    w.add("gpu3", "lab@198.18.0.10", &[]);
    let create = |extra: &[&str]| {
        w.vmctl()
            .env("VMCTL_SSH_CONNECT_TIMEOUT", "1")
            .args([
                "cluster",
                "create",
                "gx",
                "--no-start",
                "--version",
                "v1.12.1",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let nothing_made = |what: &str| {
        let dir = w.path("local-root/var/lib/vmctl/talos/gx");
        assert!(!dir.exists(), "{what}: {} was made", dir.display());
        let runs = w.ssh_runs("198.18.0.9");
        assert!(
            runs.iter()
                .all(|r| !r.iter().any(|a| a.contains("'create'"))),
            "{what}: a create ran on gpu2: {runs:?}"
        );
    };

    // No host has a GPU on vfio-pci: each host's count is named.
    let out = create(&["--hosts", "gpu2,gpu3", "--gpu-workers", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("1 GPU worker(s) need 1 free isolated GPU(s), and the hosts have 0")
            && err.contains("  - gpu2: 0 free")
            && err.contains("  - gpu3: 0 free")
            && err.contains("help: "),
        "{err}"
    );
    nothing_made("too few GPUs");

    let out = create(&["--hosts", "local,gpu2", "--control-planes", "3"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("3 control planes need 3 distinct hosts, and --hosts names 2: local, gpu2"),
        "{}",
        text(&out.stderr)
    );
    nothing_made("control planes");

    w.mode("198.18.0.10", "timeout");
    let out = create(&["--hosts", "gpu2,gpu3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("1 host(s) did not answer")
            && err.contains("  - gpu3: ssh lab@198.18.0.10: connect timed out after 1 s"),
        "{err}"
    );
    nothing_made("unreachable host");

    let out = create(&["--hosts", "gpu2,nowhere"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no host named \"nowhere\""),
        "{}",
        text(&out.stderr)
    );
    nothing_made("unknown host");
}
