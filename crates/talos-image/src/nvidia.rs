//! NVIDIA system-extension presets for GPU nodes (siderolabs/extensions `nvidia-gpu/`).
//!
//! Kernel modules and the container toolkit must share a flavour (`production` or `lts`); the open
//! kernel modules only support Turing and newer, older chips need the proprietary build
//! (`nonfree-kmod-nvidia-*`). The fabric manager is only for NVSwitch/NVLink systems.

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::Error;
use crate::machineconfig::InlineManifest;
use crate::machineconfig::blocks::map;
use crate::schematic::Schematic;

/// Extension shipped by default on VMs (the guest agent lets libvirt see the address and shut down cleanly).
pub const QEMU_GUEST_AGENT: &str = "siderolabs/qemu-guest-agent";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    #[default]
    Production,
    Lts,
}

impl Flavour {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::Production => "production",
            Flavour::Lts => "lts",
        }
    }
}

impl std::str::FromStr for Flavour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "production" => Ok(Flavour::Production),
            "lts" => Ok(Flavour::Lts),
            _ => Err(format!(
                "unknown NVIDIA flavour {s:?} (expected production or lts)"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// `nvidia-open-gpu-kernel-modules-<flavour>`: Turing (TU) and newer.
    Open,
    /// `nonfree-kmod-nvidia-<flavour>`: everything, required before Turing.
    Proprietary,
}

impl std::str::FromStr for Driver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(Driver::Open),
            "proprietary" => Ok(Driver::Proprietary),
            _ => Err(format!(
                "unknown NVIDIA driver {s:?} (expected open or proprietary)"
            )),
        }
    }
}

/// Why a driver was chosen; `Unknown` is the caller's cue to print a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverChoice {
    Turing,
    PreTuring,
    Unknown,
}

impl Driver {
    /// Pick the driver from a chip code such as `TU104`, `GA102`, `AD102`, `GH100`, `GB202`.
    ///
    /// The open modules need a GSP, present from Turing on (NVIDIA open-gpu-kernel-modules README).
    /// Unknown codes fall back to the proprietary driver, which supports every generation.
    pub fn for_chip(chip: &str) -> (Driver, DriverChoice) {
        let code = chip.trim().to_ascii_uppercase();
        let prefix: String = code
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        match prefix.as_str() {
            // Turing, Ampere, Ada, Hopper, Blackwell (datacenter GB1xx and consumer GB2xx).
            "TU" | "GA" | "AD" | "GH" | "GB" => (Driver::Open, DriverChoice::Turing),
            // Kepler, Maxwell, Pascal, Volta.
            "GK" | "GM" | "GP" | "GV" => (Driver::Proprietary, DriverChoice::PreTuring),
            _ => (Driver::Proprietary, DriverChoice::Unknown),
        }
    }
}

/// The extension set for a GPU node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvidiaPreset {
    pub flavour: Flavour,
    pub driver: Driver,
    /// Add `nvidia-fabricmanager-<flavour>` (NVSwitch present, or asked for).
    pub fabric_manager: bool,
    /// Further extensions, full names; VMs default to [`QEMU_GUEST_AGENT`].
    pub extras: Vec<String>,
}

impl NvidiaPreset {
    /// Production flavour, the given driver, no fabric manager, the guest agent.
    pub fn for_vm(driver: Driver) -> Self {
        NvidiaPreset {
            flavour: Flavour::Production,
            driver,
            fabric_manager: false,
            extras: vec![QEMU_GUEST_AGENT.to_string()],
        }
    }

    /// Extension names in schematic order: kernel modules, toolkit, fabric manager, extras
    /// (duplicates of earlier entries dropped, order otherwise kept since it changes the ID).
    pub fn extensions(&self) -> Vec<String> {
        let f = self.flavour.as_str();
        let mut out = vec![
            match self.driver {
                Driver::Open => format!("siderolabs/nvidia-open-gpu-kernel-modules-{f}"),
                Driver::Proprietary => format!("siderolabs/nonfree-kmod-nvidia-{f}"),
            },
            format!("siderolabs/nvidia-container-toolkit-{f}"),
        ];
        if self.fabric_manager {
            out.push(format!("siderolabs/nvidia-fabricmanager-{f}"));
        }
        for e in &self.extras {
            let name = qualify(e);
            if !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }

    pub fn schematic(&self) -> Schematic {
        Schematic::with_extensions(self.extensions())
    }
}

/// `qemu-guest-agent` → `siderolabs/qemu-guest-agent`; names with an owner are kept.
pub fn qualify(name: &str) -> String {
    if name.contains('/') {
        name.to_string()
    } else {
        format!("siderolabs/{name}")
    }
}

/// Kernel modules a GPU node loads (siderolabs NVIDIA guide).
pub const GPU_KERNEL_MODULES: [&str; 4] = ["nvidia", "nvidia_uvm", "nvidia_drm", "nvidia_modeset"];

/// The sysctl the NVIDIA container toolkit needs.
pub const GPU_SYSCTL: (&str, &str) = ("net.core.bpf_jit_harden", "1");

/// The node label a GPU worker carries; the device plugin runs only where it is set.
pub const GPU_NODE_LABEL: (&str, &str) = ("nvidia.com/gpu.present", "true");

/// The NVIDIA Kubernetes device plugin image, pinned (the tag of NVIDIA's static manifest,
/// `deployments/static/nvidia-device-plugin.yml` in NVIDIA/k8s-device-plugin).
pub const DEVICE_PLUGIN_IMAGE: &str = "nvcr.io/nvidia/k8s-device-plugin:v0.17.1";

/// The `RuntimeClass` pods use to get a GPU (`runtimeClassName: nvidia`; the handler is the
/// containerd runtime the NVIDIA container toolkit extension registers).
pub fn runtime_class() -> Value {
    map([
        ("apiVersion", "node.k8s.io/v1".into()),
        ("kind", "RuntimeClass".into()),
        ("metadata", map([("name", "nvidia".into())])),
        ("handler", "nvidia".into()),
    ])
}

/// The device plugin's DaemonSet in `kube-system`: on nodes labelled [`GPU_NODE_LABEL`], under
/// the `nvidia` runtime class, advertising `nvidia.com/gpu` to the kubelet.
pub fn device_plugin_daemonset() -> Value {
    let labels = || map([("app.kubernetes.io/name", "nvidia-device-plugin".into())]);
    let container = map([
        ("name", "nvidia-device-plugin".into()),
        ("image", DEVICE_PLUGIN_IMAGE.into()),
        (
            "env",
            Value::Sequence(vec![map([
                ("name", "FAIL_ON_INIT_ERROR".into()),
                ("value", "false".into()),
            ])]),
        ),
        (
            "securityContext",
            map([
                ("allowPrivilegeEscalation", false.into()),
                (
                    "capabilities",
                    map([("drop", Value::Sequence(vec!["ALL".into()]))]),
                ),
            ]),
        ),
        (
            "volumeMounts",
            Value::Sequence(vec![map([
                ("name", "device-plugins".into()),
                ("mountPath", "/var/lib/kubelet/device-plugins".into()),
            ])]),
        ),
    ]);
    let pod = map([
        ("runtimeClassName", "nvidia".into()),
        ("priorityClassName", "system-node-critical".into()),
        (
            "nodeSelector",
            map([(GPU_NODE_LABEL.0, GPU_NODE_LABEL.1.into())]),
        ),
        (
            "tolerations",
            Value::Sequence(vec![map([
                ("key", "nvidia.com/gpu".into()),
                ("operator", "Exists".into()),
                ("effect", "NoSchedule".into()),
            ])]),
        ),
        ("containers", Value::Sequence(vec![container])),
        (
            "volumes",
            Value::Sequence(vec![map([
                ("name", "device-plugins".into()),
                (
                    "hostPath",
                    map([
                        ("path", "/var/lib/kubelet/device-plugins".into()),
                        ("type", "Directory".into()),
                    ]),
                ),
            ])]),
        ),
    ]);
    map([
        ("apiVersion", "apps/v1".into()),
        ("kind", "DaemonSet".into()),
        (
            "metadata",
            map([
                ("name", "nvidia-device-plugin".into()),
                ("namespace", "kube-system".into()),
            ]),
        ),
        (
            "spec",
            map([
                ("selector", map([("matchLabels", labels())])),
                ("updateStrategy", map([("type", "RollingUpdate".into())])),
                (
                    "template",
                    map([("metadata", map([("labels", labels())])), ("spec", pod)]),
                ),
            ]),
        ),
    ])
}

/// The GPU manifests as one multi-document YAML file, for `kubectl apply -f` on a cluster whose
/// control planes do not carry them.
pub fn manifests_yaml() -> Result<String, Error> {
    Ok(inline_manifests()?
        .into_iter()
        .map(|m| m.contents)
        .collect::<Vec<_>>()
        .join("---\n"))
}

/// The cluster's GPU manifests as Talos `inlineManifests`: the RuntimeClass and the device
/// plugin, each serialized as one YAML document.
pub fn inline_manifests() -> Result<Vec<InlineManifest>, Error> {
    [
        ("nvidia-runtimeclass", runtime_class()),
        ("nvidia-device-plugin", device_plugin_daemonset()),
    ]
    .into_iter()
    .map(|(name, v)| {
        Ok(InlineManifest {
            name: name.into(),
            contents: serde_yaml::to_string(&v).map_err(|source| Error::Serialize {
                what: "Kubernetes manifest",
                source,
            })?,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device plugin is a DaemonSet Kubernetes accepts: its selector matches its pods'
    /// labels, it runs under the `nvidia` RuntimeClass the cluster also gets, only on labelled
    /// GPU nodes, from a pinned image.
    #[test]
    fn device_plugin_manifests_are_a_valid_daemonset_and_runtimeclass() {
        let m = inline_manifests().unwrap();
        let docs: Vec<Value> = m
            .iter()
            .map(|m| serde_yaml::from_str(&m.contents).unwrap())
            .collect();
        let (rc, ds) = (&docs[0], &docs[1]);
        assert_eq!(rc["apiVersion"], "node.k8s.io/v1");
        assert_eq!(rc["kind"], "RuntimeClass");
        assert_eq!(rc["handler"], "nvidia");
        assert_eq!(ds["apiVersion"], "apps/v1");
        assert_eq!(ds["kind"], "DaemonSet");
        assert_eq!(ds["metadata"]["namespace"], "kube-system");
        let spec = &ds["spec"];
        assert_eq!(
            spec["selector"]["matchLabels"],
            spec["template"]["metadata"]["labels"]
        );
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["runtimeClassName"], rc["metadata"]["name"]);
        assert_eq!(pod["nodeSelector"][GPU_NODE_LABEL.0], GPU_NODE_LABEL.1);
        let image = pod["containers"][0]["image"].as_str().unwrap();
        assert!(
            image
                .rsplit_once(':')
                .is_some_and(|(_, tag)| tag.starts_with('v')),
            "{image}"
        );
        let mount = &pod["containers"][0]["volumeMounts"][0];
        assert_eq!(mount["name"], pod["volumes"][0]["name"]);
        assert_eq!(mount["mountPath"], pod["volumes"][0]["hostPath"]["path"]);
        // One file for `kubectl apply -f`: both documents.
        assert_eq!(manifests_yaml().unwrap().matches("kind:").count(), 2);
    }

    #[test]
    fn chip_codes_choose_the_driver() {
        for chip in ["TU104", "GA102", "ad102", "GH100", "GB202", "GA100"] {
            assert_eq!(
                Driver::for_chip(chip),
                (Driver::Open, DriverChoice::Turing),
                "{chip}"
            );
        }
        for chip in ["GM204", "GP102", "GV100", "GK210"] {
            assert_eq!(
                Driver::for_chip(chip),
                (Driver::Proprietary, DriverChoice::PreTuring),
                "{chip}"
            );
        }
        assert_eq!(
            Driver::for_chip("XYZ1"),
            (Driver::Proprietary, DriverChoice::Unknown)
        );
        assert_eq!(
            Driver::for_chip(""),
            (Driver::Proprietary, DriverChoice::Unknown)
        );
    }

    #[test]
    fn vm_preset_production_open() {
        let p = NvidiaPreset::for_vm(Driver::Open);
        assert_eq!(
            p.extensions(),
            [
                "siderolabs/nvidia-open-gpu-kernel-modules-production",
                "siderolabs/nvidia-container-toolkit-production",
                "siderolabs/qemu-guest-agent"
            ]
        );
        assert_eq!(
            p.schematic().id().expect("plain").id,
            "d8f2337e57a0899a5a20429fdc5d52c41bbb1f8166bcfa8d6bb221104bb416fc"
        );
    }

    #[test]
    fn lts_proprietary_with_fabric_manager() {
        let p = NvidiaPreset {
            flavour: Flavour::Lts,
            driver: Driver::Proprietary,
            fabric_manager: true,
            extras: vec![
                "iscsi-tools".into(),
                "siderolabs/nvidia-container-toolkit-lts".into(),
            ],
        };
        assert_eq!(
            p.extensions(),
            [
                "siderolabs/nonfree-kmod-nvidia-lts",
                "siderolabs/nvidia-container-toolkit-lts",
                "siderolabs/nvidia-fabricmanager-lts",
                "siderolabs/iscsi-tools"
            ]
        );
    }

    #[test]
    fn flavour_and_driver_parse() {
        assert_eq!("lts".parse::<Flavour>(), Ok(Flavour::Lts));
        assert!("beta".parse::<Flavour>().is_err());
        assert_eq!("open".parse::<Driver>(), Ok(Driver::Open));
        assert!("nouveau".parse::<Driver>().is_err());
    }
}
