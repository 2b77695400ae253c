//! Who holds a GPU open on the host: `/proc/<pid>/fd/*` links to `/dev/nvidia<minor>`, with the
//! minor mapped to a BDF through `/proc/driver/nvidia/gpus/<BDF>/information` ("Device Minor:").

use hostio::HostRoot;
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

const NVIDIA_GPUS: &str = "/proc/driver/nvidia/gpus";

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
        let Ok(fds) = root.read_dir_names(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds {
            let Ok(target) = root.read_link(format!("/proc/{pid}/fd/{fd}")) else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use hwdetect::Gpu;
    use std::fs;
    use std::os::unix::fs::symlink;

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
