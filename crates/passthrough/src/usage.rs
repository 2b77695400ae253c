//! Who holds a GPU open on the host: `/proc/<pid>/fd/*` links to `/dev/nvidia<minor>`, with the
//! minor mapped to a BDF through `/proc/driver/nvidia/gpus/<BDF>/information` ("Device Minor:"),
//! and, on the real host, the compute processes `nvidia-smi` reports (it also sees processes in
//! other PID namespaces, e.g. containers, whose fds this `/proc` may not show).

use hostio::{Cmd, CommandRunner, HostRoot};
use hwdetect::HostFacts;
use serde::Serialize;

/// A host process with a GPU's device node open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuUser {
    pub gpu: String,
    pub pid: u32,
    pub command: String,
    pub device: String,
}

const NVIDIA_GPUS: &str = hostio::paths::PROC_DRIVER_NVIDIA_GPUS;

/// Every process holding `/dev/nvidiaN` of a GPU bound to the nvidia driver. Processes that only
/// hold `nvidiactl`/`nvidia-uvm` are not counted: they do not pin a particular GPU.
/// Unreadable `/proc` entries (processes that exit meanwhile, other users' fds) are skipped.
pub fn gpu_users(root: &HostRoot, facts: &HostFacts) -> Vec<GpuUser> {
    let minors: Vec<(String, u32)> = facts
        .gpus
        .iter()
        .filter_map(|g| {
            let info = root
                .read_to_string(format!("{NVIDIA_GPUS}/{}/information", g.bdf))
                .ok()?;
            let minor = info.lines().find_map(|l| {
                l.strip_prefix("Device Minor:")
                    .and_then(|v| v.trim().parse::<u32>().ok())
            })?;
            Some((g.bdf.clone(), minor))
        })
        .collect();
    if minors.is_empty() {
        return Vec::new();
    }
    let mut users = Vec::new();
    let pids = root.read_dir_names(hostio::paths::PROC).unwrap_or_default();
    for pid in pids.iter().filter_map(|p| p.parse::<u32>().ok()) {
        let Ok(fds) = root.read_dir_names(format!("{}/{pid}/fd", hostio::paths::PROC)) else {
            continue;
        };
        for fd in fds {
            let Ok(target) = root.read_link(format!("{}/{pid}/fd/{fd}", hostio::paths::PROC))
            else {
                continue;
            };
            let target = target.to_string_lossy().into_owned();
            let Some(minor) = target
                .strip_prefix("/dev/nvidia")
                .and_then(|m| m.parse::<u32>().ok())
            else {
                continue;
            };
            for (bdf, _) in minors.iter().filter(|(_, m)| *m == minor) {
                let command = root
                    .read_to_string(format!("/proc/{pid}/comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_else(|_| "?".to_string());
                let user = GpuUser {
                    gpu: bdf.clone(),
                    pid,
                    command,
                    device: target.clone(),
                };
                if !users.contains(&user) {
                    users.push(user);
                }
            }
        }
    }
    users
}

/// The compute processes `nvidia-smi --query-compute-apps` lists on the GPUs in `facts`.
/// Without nvidia-smi (not installed, no driver loaded) the answer is empty.
pub fn nvidia_smi_users(runner: &dyn CommandRunner, facts: &HostFacts) -> Vec<GpuUser> {
    let cmd = Cmd::new([
        "nvidia-smi",
        "--query-compute-apps=gpu_bus_id,pid,process_name",
        "--format=csv,noheader",
    ]);
    let Ok(out) = runner.run(&cmd) else {
        return Vec::new();
    };
    let mut users = Vec::new();
    for line in out.stdout_str().lines() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [bus_id, pid, name] = fields[..] else {
            continue;
        };
        // nvidia-smi prints an 8-digit PCI domain (`00000000:01:00.0`); sysfs uses 4.
        let Some((domain, rest)) = bus_id.split_once(':') else {
            continue;
        };
        let bdf = format!("{}:{rest}", &domain[domain.len().saturating_sub(4)..]).to_lowercase();
        let (Ok(pid), true) = (pid.parse::<u32>(), facts.gpus.iter().any(|g| g.bdf == bdf)) else {
            continue;
        };
        users.push(GpuUser {
            gpu: bdf,
            pid,
            command: name.rsplit('/').next().unwrap_or(name).to_string(),
            device: "nvidia-smi".into(),
        });
    }
    users
}

/// [`gpu_users`], plus [`nvidia_smi_users`] when `root` is the real host; one entry per GPU and
/// process.
pub fn host_gpu_users(
    root: &HostRoot,
    runner: &dyn CommandRunner,
    facts: &HostFacts,
) -> Vec<GpuUser> {
    let mut users = gpu_users(root, facts);
    if root.is_system() {
        for u in nvidia_smi_users(runner, facts) {
            if !users.iter().any(|v| v.gpu == u.gpu && v.pid == u.pid) {
                users.push(u);
            }
        }
    }
    users
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwdetect::Gpu;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn nvidia_smi_compute_apps_are_users_of_known_gpus() {
        use hostio::{Output, RecordingRunner};
        let runner = RecordingRunner::new().answer(
            ["nvidia-smi"],
            Output::ok(
                "00000000:01:00.0, 4242, /usr/bin/python3\n00000000:02:00.0, 7, x\ngarbage\n",
            ),
        );
        let facts = HostFacts {
            gpus: vec![Gpu {
                bdf: "0000:01:00.0".into(),
                ..Gpu::default()
            }],
            ..HostFacts::default()
        };
        assert_eq!(
            nvidia_smi_users(&runner, &facts),
            vec![GpuUser {
                gpu: "0000:01:00.0".into(),
                pid: 4242,
                command: "python3".into(),
                device: "nvidia-smi".into()
            }]
        );
        assert!(nvidia_smi_users(&RecordingRunner::failing_at(0), &facts).is_empty());
        // A fixture root never asks the real nvidia-smi.
        let dir = tempfile::tempdir().unwrap();
        let r = RecordingRunner::new();
        assert!(host_gpu_users(&HostRoot::new(dir.path()), &r, &facts).is_empty());
        assert!(r.calls().is_empty());
    }

    #[test]
    fn finds_a_process_holding_the_gpu_minor() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(dir.path());
        let info = root.path("/proc/driver/nvidia/gpus/0000:01:00.0/information");
        fs::create_dir_all(info.parent().unwrap()).unwrap();
        fs::write(
            &info,
            "Model: NVIDIA GeForce RTX 3090\nDevice Minor: \t 1\n",
        )
        .unwrap();
        for (pid, comm, dev) in [
            (42, "python3", "/dev/nvidia1"),
            (43, "persistenced", "/dev/nvidiactl"),
        ] {
            let fd = root.path(format!("/proc/{pid}/fd"));
            fs::create_dir_all(&fd).unwrap();
            symlink(dev, fd.join("3")).unwrap();
            fs::write(root.path(format!("/proc/{pid}/comm")), format!("{comm}\n")).unwrap();
        }
        let facts = HostFacts {
            gpus: vec![Gpu {
                bdf: "0000:01:00.0".into(),
                ..Gpu::default()
            }],
            ..HostFacts::default()
        };
        assert_eq!(
            gpu_users(&root, &facts),
            vec![GpuUser {
                gpu: "0000:01:00.0".into(),
                pid: 42,
                command: "python3".into(),
                device: "/dev/nvidia1".into()
            }]
        );
    }
}
