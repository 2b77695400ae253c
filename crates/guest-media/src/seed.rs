//! The cloud-init NoCloud seed: `user-data`, `meta-data` (with `instance-id`) and
//! `network-config` (v2) rendered purely from a [`SeedSpec`], then written as an ISO 9660 volume
//! labelled `cidata` with Joliet + Rock Ridge (lowercase names) by `genisoimage` through the
//! runner. Format: https://cloudinit.readthedocs.io/en/latest/reference/datasources/nocloud.html

use std::path::{Path, PathBuf};

use hostio::{Cmd, CommandRunner};
use serde::Serialize;

use crate::error::{Error, Result};

/// The guest's network, matched by the NIC's MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum GuestNetwork {
    Dhcp {
        mac: String,
    },
    Static {
        mac: String,
        /// `A.B.C.D/NN`.
        address: String,
        gateway: Option<String>,
        dns: Vec<String>,
    },
}

/// What goes into the seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeedSpec {
    pub hostname: String,
    pub instance_id: String,
    pub user: String,
    pub ssh_authorized_keys: Vec<String>,
    /// A crypt(3) hash; vmctl never puts a plaintext password in user-data.
    pub password_hash: Option<String>,
    pub packages: Vec<String>,
    pub network: GuestNetwork,
    /// A clone's first boot: give the guest a machine-id of its own (its disk has the source's).
    pub reset_machine_id: bool,
    /// Commands run once at the end of the first boot (a template's), each an argv list.
    pub runcmd: Vec<Vec<String>>,
    /// virtiofs shares the guest mounts at `/mnt/<tag>` ([`crate::mounts`]).
    pub mounts: Vec<crate::mounts::GuestMount>,
    /// Extra apt repositories, packages and services installed at the first boot (the NVIDIA
    /// guest driver of `vmctl create ubuntu --gpu`).
    pub driver: Option<GuestPackages>,
}

/// An apt repository the guest adds: its binary keyring is written by `write_files` and its
/// one-line source by cloud-init's `apt: sources:`, `signed-by` that keyring only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AptRepo {
    /// The source's id: `/etc/apt/sources.list.d/<name>.list`.
    pub name: String,
    /// The repository's URI (a flat repository: suite `/`, no components).
    pub uri: String,
    /// Where the keyring goes, e.g. `/etc/apt/keyrings/cuda-archive-keyring.gpg`.
    pub keyring_path: String,
    /// The keyring in OpenPGP binary form (what `gpg --dearmor` writes): the guest may have
    /// no gpg.
    #[serde(skip)]
    pub keyring: Vec<u8>,
}

impl AptRepo {
    /// The sources.list(5) one-line entry.
    pub fn source_line(&self) -> String {
        format!("deb [signed-by={}] {} /", self.keyring_path, self.uri)
    }
}

/// Packages from added repositories, installed after `apt-get update`, then services enabled
/// and, when `reboot_unless_module` does not load after the install, one reboot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestPackages {
    pub repos: Vec<AptRepo>,
    pub packages: Vec<String>,
    /// `systemctl enable` at the end of the first boot (they start at the next boot).
    pub enable_services: Vec<String>,
    /// Reboot once the first boot is done if `modprobe <module>` fails (a kernel module that
    /// was just built by DKMS for a running kernel loads without one; a module blocked by the
    /// nouveau driver, or one that needs the new initramfs, needs it).
    pub reboot_unless_module: Option<String>,
}

#[derive(Serialize)]
struct UserData<'a> {
    hostname: &'a str,
    manage_etc_hosts: &'a str,
    ssh_pwauth: bool,
    disable_root: bool,
    /// ed25519 only: under TCG each host key type costs seconds at first boot.
    ssh_genkeytypes: Vec<&'a str>,
    users: Vec<User<'a>>,
    packages: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bootcmd: Vec<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    write_files: Vec<crate::mounts::WriteFile>,
    runcmd: Vec<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    package_update: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    apt: Option<Apt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    power_state: Option<PowerState>,
}

/// cloud-init `apt:` (cc_apt_configure): only `sources`, keyed by file name.
#[derive(Serialize)]
struct Apt {
    sources: std::collections::BTreeMap<String, AptSource>,
}

#[derive(Serialize)]
struct AptSource {
    source: String,
}

/// cloud-init `power_state` (cc_power_state_change): runs last in the final stage, once
/// cloud-init is done; `condition` is a command whose exit 0 means "do it" (cloud-init docs,
/// module "Power State Change"; schema-cloud-config-v1.json `cc_power_state_change`).
#[derive(Serialize)]
struct PowerState {
    mode: &'static str,
    message: String,
    condition: Vec<String>,
}

#[derive(Serialize)]
struct User<'a> {
    name: &'a str,
    groups: Vec<&'a str>,
    shell: &'a str,
    sudo: &'a str,
    lock_passwd: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    hashed_passwd: Option<&'a str>,
    ssh_authorized_keys: &'a [String],
}

/// Refuses a value with a character that YAML 1.1 does not allow in a stream (cloud-init's
/// PyYAML rejects the whole file: no user, no key, no network) or a control or bidi character
/// ([`crate::text::is_unsafe_text_char`]). The serializer escapes C0 controls, but DEL, the C1
/// controls and U+FFFE/U+FFFF would pass through raw.
fn check_text(file: &'static str, field: &'static str, value: &str) -> Result<()> {
    match value.chars().find(|c| crate::text::is_unsafe_text_char(*c)) {
        Some(c) => Err(Error::SeedCharacter {
            file,
            field,
            codepoint: u32::from(c),
        }),
        None => Ok(()),
    }
}

/// `#cloud-config` user-data.
pub fn user_data(spec: &SeedSpec) -> Result<String> {
    let file = "user-data";
    check_text(file, "hostname", &spec.hostname)?;
    check_text(file, "name", &spec.user)?;
    for k in &spec.ssh_authorized_keys {
        check_text(file, "ssh_authorized_keys", k)?;
    }
    if let Some(h) = &spec.password_hash {
        check_text(file, "hashed_passwd", h)?;
    }
    for p in &spec.packages {
        check_text(file, "packages", p)?;
    }
    for word in spec.runcmd.iter().flatten() {
        check_text(file, "runcmd", word)?;
    }
    let mut packages: Vec<&str> = vec!["qemu-guest-agent"];
    let driver_packages = spec.driver.iter().flat_map(|d| d.packages.iter());
    for p in spec.packages.iter().chain(driver_packages) {
        check_text(file, "packages", p)?;
        if !packages.contains(&p.as_str()) {
            packages.push(p);
        }
    }
    let (mut write_files, mount_cmds) = crate::mounts::user_data_parts(&spec.mounts);
    let mut service_cmds = Vec::new();
    let mut apt = None;
    let mut power_state = None;
    if let Some(d) = &spec.driver {
        let mut sources = std::collections::BTreeMap::new();
        for r in &d.repos {
            for (field, v) in [
                ("apt", &r.name),
                ("apt", &r.uri),
                ("write_files", &r.keyring_path),
            ] {
                check_text(file, field, v)?;
            }
            write_files.push(crate::mounts::WriteFile {
                path: r.keyring_path.clone(),
                content: base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    &r.keyring,
                ),
                encoding: Some("b64"),
                permissions: Some("0644"),
                append: false,
            });
            sources.insert(
                format!("{}.list", r.name),
                AptSource {
                    source: r.source_line(),
                },
            );
        }
        apt = (!sources.is_empty()).then_some(Apt { sources });
        for svc in &d.enable_services {
            check_text(file, "runcmd", svc)?;
            service_cmds.push(vec!["systemctl".into(), "enable".into(), svc.clone()]);
        }
        if let Some(m) = &d.reboot_unless_module {
            check_text(file, "power_state", m)?;
            if let Some(c) = m
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
                .or(m.is_empty().then_some(' '))
            {
                return Err(Error::SeedCharacter {
                    file,
                    field: "power_state",
                    codepoint: u32::from(c),
                });
            }
            // The condition is met (exit 0) when the module does NOT load; `!` needs a shell.
            // The module name is a checked identifier, never user text.
            power_state = Some(PowerState {
                mode: "reboot",
                message: format!("vmctl: rebooting to load the {m} kernel module"),
                condition: vec!["sh".into(), "-c".into(), format!("! modprobe {m}")],
            });
        }
    }
    let mut runcmd: Vec<Vec<String>> = vec![vec![
        "systemctl".into(),
        "start".into(),
        "qemu-guest-agent".into(),
    ]];
    runcmd.extend(mount_cmds);
    runcmd.extend(service_cmds);
    runcmd.extend(spec.runcmd.iter().cloned());
    let ud = UserData {
        hostname: &spec.hostname,
        manage_etc_hosts: "localhost",
        ssh_pwauth: false,
        disable_root: true,
        ssh_genkeytypes: vec!["ed25519"],
        users: vec![User {
            name: &spec.user,
            groups: vec!["sudo"],
            shell: "/bin/bash",
            sudo: "ALL=(ALL) NOPASSWD:ALL",
            lock_passwd: spec.password_hash.is_none(),
            hashed_passwd: spec.password_hash.as_deref(),
            ssh_authorized_keys: &spec.ssh_authorized_keys,
        }],
        packages,
        bootcmd: if spec.reset_machine_id {
            reset_machine_id()
        } else {
            Vec::new()
        },
        write_files,
        // The agent's unit is started by udev when its virtio port appears; start it in case the
        // package was only just installed. Then the shares' mounts.
        runcmd,
        // The added repositories' lists must be read before their packages install.
        package_update: spec.driver.as_ref().map(|_| true),
        apt,
        power_state,
    };
    let body = crate::yaml::to_string(&ud).map_err(|source| Error::RenderSeed {
        file: "user-data",
        source,
    })?;
    Ok(format!("#cloud-config\n{body}"))
}

/// A new machine-id, once per instance (a clone has a new instance-id): `cloud-init-per
/// instance` runs it on the first boot of the clone only. An empty /etc/machine-id is what
/// systemd-machine-id-setup(1) fills; dbus's copy is a symlink or a stale file, removed.
fn reset_machine_id() -> Vec<Vec<&'static str>> {
    vec![vec![
        "cloud-init-per",
        "instance",
        "vmctl-machine-id",
        "sh",
        "-c",
        "rm -f /etc/machine-id /var/lib/dbus/machine-id && systemd-machine-id-setup",
    ]]
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct MetaData<'a> {
    instance_id: &'a str,
    local_hostname: &'a str,
}

/// `meta-data`: cloud-init reruns per-instance modules only when `instance-id` changes. From the
/// serializer, which quotes every string: a host named `yes`, `null` or `012` would otherwise
/// be a bool, None or a number to cloud-init's YAML 1.1 loader, and the NoCloud source fails.
pub fn meta_data(spec: &SeedSpec) -> Result<String> {
    let file = "meta-data";
    check_text(file, "instance-id", &spec.instance_id)?;
    check_text(file, "local-hostname", &spec.hostname)?;
    crate::yaml::to_string(&MetaData {
        instance_id: &spec.instance_id,
        local_hostname: &spec.hostname,
    })
    .map_err(|source| Error::RenderSeed { file, source })
}

#[derive(Serialize)]
struct NetworkV2<'a> {
    version: u8,
    ethernets: std::collections::BTreeMap<&'a str, Ethernet<'a>>,
}

#[derive(Serialize)]
struct Ethernet<'a> {
    #[serde(rename = "match")]
    matches: MatchMac<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dhcp4: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    addresses: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<Route<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nameservers: Option<Nameservers<'a>>,
}

#[derive(Serialize)]
struct MatchMac<'a> {
    macaddress: &'a str,
}

#[derive(Serialize)]
struct Route<'a> {
    /// `0.0.0.0/0` rather than `default`: older cloud-init (Debian 12's 22.4) only parses CIDRs.
    to: &'a str,
    via: &'a str,
}

#[derive(Serialize)]
struct Nameservers<'a> {
    addresses: Vec<&'a str>,
}

/// `network-config` version 2, matching the NIC by MAC (names differ between guests).
pub fn network_config(spec: &SeedSpec) -> Result<String> {
    let eth = match &spec.network {
        GuestNetwork::Dhcp { mac } => Ethernet {
            matches: MatchMac { macaddress: mac },
            dhcp4: Some(true),
            addresses: vec![],
            routes: vec![],
            nameservers: None,
        },
        GuestNetwork::Static {
            mac,
            address,
            gateway,
            dns,
        } => Ethernet {
            matches: MatchMac { macaddress: mac },
            dhcp4: Some(false),
            addresses: vec![address],
            routes: gateway
                .iter()
                .map(|g| Route {
                    to: "0.0.0.0/0",
                    via: g,
                })
                .collect(),
            nameservers: (!dns.is_empty()).then(|| Nameservers {
                addresses: dns.iter().map(String::as_str).collect(),
            }),
        },
    };
    let doc = NetworkV2 {
        version: 2,
        ethernets: [("nic0", eth)].into_iter().collect(),
    };
    crate::yaml::to_string(&doc).map_err(|source| Error::RenderSeed {
        file: "network-config",
        source,
    })
}

/// The three seed files, by name.
pub fn render(spec: &SeedSpec) -> Result<Vec<(&'static str, String)>> {
    Ok(vec![
        ("user-data", user_data(spec)?),
        ("meta-data", meta_data(spec)?),
        ("network-config", network_config(spec)?),
    ])
}

/// Writes files as a `cidata` ISO at `out` (files are staged next to it and removed after).
/// `out` must not exist; it is created with mode 0600 ([`crate::disk::FILE_MODE`]).
pub fn write_iso(runner: &dyn CommandRunner, files: &[(&str, String)], out: &Path) -> Result<()> {
    write_iso_labelled(runner, "cidata", files, out)
}

/// [`write_iso`] with another volume label (Talos' metal platform reads a `metal-iso` volume).
///
/// The seed's files hold secrets (a password hash; a Talos node's CA keys and bootstrap token),
/// and the VM's directory is searchable by others, so nothing on the way is readable by them: the
/// staging directory is made 0700 by this call (an existing one is refused, never reused), the
/// staged files and the ISO are created 0600 before anything is written into them
/// (`genisoimage -output` truncates the existing file and keeps its mode).
pub fn write_iso_labelled(
    runner: &dyn CommandRunner,
    label: &str,
    files: &[(&str, String)],
    out: &Path,
) -> Result<()> {
    let stage = staging_dir(out);
    let io = |op: &'static str, path: PathBuf| move |source| Error::Io { op, path, source };
    hostio::file::make_dir(&stage, 0o700).map_err(io("create", stage.clone()))?;
    let mut made_out = false;
    let result = (|| {
        let mut argv = vec![
            "genisoimage".to_string(),
            "-quiet".into(),
            "-output".into(),
            out.display().to_string(),
            "-volid".into(),
            label.into(),
            "-joliet".into(),
            "-rock".into(),
        ];
        for (name, body) in files {
            let p = stage.join(name);
            crate::disk::write_private(&p, body.as_bytes())?;
            argv.push(p.display().to_string());
        }
        crate::disk::create_private(out)?;
        made_out = true;
        tracing::info!(argv = ?argv, "writing seed");
        runner
            .run(&Cmd::new(argv))
            .map(|_| ())
            .map_err(|source| Error::WriteSeed {
                path: out.to_path_buf(),
                source,
            })
    })();
    let _ = hostio::file::remove_tree(&stage);
    if result.is_err() && made_out {
        let _ = hostio::file::remove_file(out);
    }
    result
}

fn staging_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.d"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hostio::SystemRunner;

    pub fn sample(network: GuestNetwork) -> SeedSpec {
        SeedSpec {
            hostname: "e2e1".into(),
            instance_id: "e2e1-0001".into(),
            user: "ubuntu".into(),
            ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 test@host".into()],
            password_hash: None,
            packages: vec!["htop".into(), "qemu-guest-agent".into()],
            network,
            reset_machine_id: false,
            runcmd: Vec::new(),
            mounts: Vec::new(),
            driver: None,
        }
    }

    pub fn static_net() -> GuestNetwork {
        GuestNetwork::Static {
            mac: "52:54:00:12:34:56".into(),
            address: "198.18.0.10/24".into(),
            gateway: Some("198.18.0.1".into()),
            dns: vec!["198.18.0.1".into()],
        }
    }

    /// Validates user-data with `cloud-init schema` (package cloud-init).
    pub fn assert_valid_user_data(text: &str) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("user-data");
        std::fs::write(&p, text).unwrap();
        let out = std::process::Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(&p)
            .output()
            .expect("cloud-init is installed (apt-get install cloud-init)");
        assert!(
            out.status.success(),
            "cloud-init schema rejected:\n{text}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn static_seed_snapshot_and_schema() {
        let spec = sample(static_net());
        let ud = user_data(&spec).unwrap();
        assert_valid_user_data(&ud);
        assert!(!ud.contains("plain_text_passwd") && !ud.contains("hashed_passwd"));
        insta::assert_snapshot!("user_data_static", ud);
        insta::assert_snapshot!("network_config_static", network_config(&spec).unwrap());
        insta::assert_snapshot!("meta_data", meta_data(&spec).unwrap());
    }

    pub fn driver_packages() -> GuestPackages {
        GuestPackages {
            repos: vec![AptRepo {
                name: "cuda".into(),
                uri: "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64"
                    .into(),
                keyring_path: "/etc/apt/keyrings/cuda-archive-keyring.gpg".into(),
                keyring: vec![0x99, 0x01, 0x0d, 0xff, 0x00],
            }],
            packages: vec!["nvidia-open-580".into()],
            enable_services: vec!["nvidia-fabricmanager".into()],
            reboot_unless_module: Some("nvidia".into()),
        }
    }

    #[test]
    fn a_driver_seed_writes_the_binary_keyring_the_source_and_a_conditional_reboot() {
        let mut spec = sample(static_net());
        spec.driver = Some(driver_packages());
        let ud = user_data(&spec).unwrap();
        assert_valid_user_data(&ud);
        let v = serde_yaml_ng_free_load(&ud);
        let wf = &v["write_files"][0];
        assert_eq!(wf["path"], "/etc/apt/keyrings/cuda-archive-keyring.gpg");
        assert_eq!(wf["encoding"], "b64");
        assert_eq!(wf["content"], "mQEN/wA=");
        assert!(wf.get("append").is_none(), "{wf}");
        assert_eq!(
            v["apt"]["sources"]["cuda.list"]["source"],
            "deb [signed-by=/etc/apt/keyrings/cuda-archive-keyring.gpg] https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64 /"
        );
        assert_eq!(v["package_update"], true);
        assert_eq!(
            v["packages"],
            serde_json::json!(["qemu-guest-agent", "htop", "nvidia-open-580"])
        );
        assert_eq!(v["power_state"]["mode"], "reboot");
        assert_eq!(
            v["power_state"]["condition"],
            serde_json::json!(["sh", "-c", "! modprobe nvidia"])
        );
        assert_eq!(
            v["runcmd"][1],
            serde_json::json!(["systemctl", "enable", "nvidia-fabricmanager"])
        );
        // Without a driver, none of it.
        let plain = user_data(&sample(static_net())).unwrap();
        for k in ["apt:", "package_update", "power_state"] {
            assert!(!plain.contains(k), "{k}: {plain}");
        }
        let mut bad = sample(static_net());
        let mut d = driver_packages();
        d.reboot_unless_module = Some("nvidia; reboot".into());
        bad.driver = Some(d);
        assert!(user_data(&bad).is_err());
    }

    #[test]
    fn a_clones_seed_resets_the_machine_id_once() {
        let mut spec = sample(static_net());
        spec.reset_machine_id = true;
        let ud = user_data(&spec).unwrap();
        assert_valid_user_data(&ud);
        assert!(ud.contains("bootcmd:"), "{ud}");
        assert!(ud.contains("  - [\"cloud-init-per\",\"instance\","), "{ud}");
        assert!(
            !user_data(&sample(static_net()))
                .unwrap()
                .contains("bootcmd")
        );
    }

    #[test]
    fn dhcp_seed_and_hashed_password() {
        let mut spec = sample(GuestNetwork::Dhcp {
            mac: "52:54:00:ab:cd:ef".into(),
        });
        spec.password_hash = Some("$6$salt$hashhashhash".into());
        let ud = user_data(&spec).unwrap();
        assert_valid_user_data(&ud);
        assert!(ud.contains("lock_passwd: false"));
        insta::assert_snapshot!("network_config_dhcp", network_config(&spec).unwrap());
    }

    #[test]
    fn shares_are_mounted_through_fstab_and_runcmd() {
        let mut spec = sample(static_net());
        spec.mounts = vec![
            crate::mounts::GuestMount {
                tag: "models".into(),
                readonly: false,
            },
            crate::mounts::GuestMount {
                tag: "data".into(),
                readonly: true,
            },
        ];
        let ud = user_data(&spec).unwrap();
        assert_valid_user_data(&ud);
        let v: serde_json::Value = serde_yaml_ng_free_load(&ud);
        assert_eq!(v["write_files"][0]["path"], "/etc/fstab");
        assert_eq!(v["write_files"][0]["append"], true);
        assert_eq!(
            v["write_files"][0]["content"],
            "models /mnt/models virtiofs defaults,nofail 0 0\ndata /mnt/data virtiofs ro,nofail 0 0\n"
        );
        let runcmd: Vec<String> = v["runcmd"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert_eq!(
            runcmd,
            [
                "systemctl start qemu-guest-agent",
                "mkdir -p /mnt/models",
                "mount /mnt/models",
                "mkdir -p /mnt/data",
                "mount /mnt/data"
            ]
        );
        // Without shares, user-data is as before (no write_files).
        assert!(
            !user_data(&sample(static_net()))
                .unwrap()
                .contains("write_files")
        );
    }

    /// user-data as cloud-init's own YAML loader reads it, scalars as their string form.
    fn serde_yaml_ng_free_load(ud: &str) -> serde_json::Value {
        fn untag(v: &serde_json::Value) -> serde_json::Value {
            match v {
                serde_json::Value::Object(m) => {
                    m.iter().map(|(k, x)| (k.clone(), untag(x))).collect()
                }
                serde_json::Value::Array(a)
                    if a.len() == 2
                        && a[0].is_string()
                        && !a[1].is_array()
                        && !a[1].is_object() =>
                {
                    match (a[0].as_str(), a[1].as_str()) {
                        (Some("bool"), Some(b)) => serde_json::Value::Bool(b == "True"),
                        _ => a[1].clone(),
                    }
                }
                serde_json::Value::Array(a) => a.iter().map(untag).collect(),
                other => other.clone(),
            }
        }
        let v = load_with_cloud_init(&[("user-data".to_string(), ud.to_string())]);
        untag(&v["user-data"])
    }

    /// The Python that runs cloud-init (its script's `#!` line), which has cloud-init's modules.
    fn cloud_init_python() -> String {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let script = std::env::split_paths(&path)
            .map(|d| d.join("cloud-init"))
            .find(|p| p.is_file())
            .expect("cloud-init is installed (apt-get install cloud-init)");
        let text = std::fs::read_to_string(&script).unwrap();
        let first = text.lines().next().unwrap_or_default();
        first
            .strip_prefix("#!")
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("python3")
            .to_string()
    }

    /// Loads `files` (name, text) with cloud-init's YAML loader (`util.load_yaml`, what the
    /// NoCloud source uses) in one Python run; returns, per file, the document as JSON with every
    /// scalar tagged by its Python type.
    fn load_with_cloud_init(files: &[(String, String)]) -> serde_json::Value {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (name, body) in files {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            paths.push(p);
        }
        let script = r#"
import json, sys
from cloudinit import util
def tag(v):
    if isinstance(v, dict):
        return {str(k): tag(x) for k, x in v.items()}
    if isinstance(v, list):
        return [tag(x) for x in v]
    return [type(v).__name__, str(v)]
print(json.dumps({p.rsplit("/", 1)[-1]: tag(util.load_yaml(open(p).read())) for p in sys.argv[1:]}))
"#;
        let out = std::process::Command::new(cloud_init_python())
            .arg("-c")
            .arg(script)
            .args(&paths)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Host names YAML 1.1 reads as bools, null, floats, ints (hex, octal, base 60, with `_`).
    /// Not all are valid VM names (`1.5`, `1_0`, `~`); the renderer must cope with each anyway.
    const YAML_LOOKALIKES: &[&str] = &[
        "yes", "on", "null", "1.5", "0x1f", "012", "1_0", "true", "off", "no", "y", "n", "1e3",
        "~", "Null", "NO", "1:20", ".inf", "-1", "0b101",
    ];

    #[test]
    fn yaml_lookalike_hostnames_load_as_strings_from_every_seed_file() {
        let mut files = Vec::new();
        for (i, name) in YAML_LOOKALIKES.iter().enumerate() {
            let mut spec = sample(static_net());
            spec.hostname = (*name).into();
            spec.instance_id = (*name).into();
            for (f, text) in render(&spec).unwrap() {
                files.push((format!("{i}-{f}"), text));
            }
        }
        let docs = load_with_cloud_init(&files);
        let s = |x: &str| serde_json::json!(["str", x]);
        for (i, name) in YAML_LOOKALIKES.iter().enumerate() {
            let md = &docs[format!("{i}-meta-data")];
            assert_eq!(md["local-hostname"], s(name), "{name}: {md}");
            assert_eq!(md["instance-id"], s(name), "{name}: {md}");
            let ud = &docs[format!("{i}-user-data")];
            assert_eq!(ud["hostname"], s(name), "{name}: {ud}");
            let nic = &docs[format!("{i}-network-config")]["ethernets"]["nic0"];
            assert_eq!(nic["match"]["macaddress"], s("52:54:00:12:34:56"), "{nic}");
        }
        // The schema does not depend on the name's text; one run stands for all.
        assert_valid_user_data(&files[0].1);
    }

    #[test]
    fn characters_yaml_rejects_are_refused() {
        for bad in [
            '\u{7f}', '\u{85}', '\u{9b}', '\u{fffe}', '\u{ffff}', '\u{1b}', '\u{202e}',
        ] {
            let mut spec = sample(static_net());
            spec.ssh_authorized_keys[0].push(bad);
            let err = user_data(&spec).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::SeedCharacter {
                        field: "ssh_authorized_keys",
                        ..
                    }
                ),
                "{bad:?}: {err}"
            );
            assert!(err.is_usage(), "{err}");
            let mut spec = sample(static_net());
            spec.password_hash = Some(format!("$6$salt{bad}$hash"));
            let err = render(&spec).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::SeedCharacter {
                        field: "hashed_passwd",
                        ..
                    }
                ),
                "{err}"
            );
            let mut spec = sample(static_net());
            spec.hostname = format!("a{bad}");
            assert!(meta_data(&spec).is_err());
        }
        // Printable non-ASCII is fine and round-trips.
        let mut spec = sample(static_net());
        spec.ssh_authorized_keys[0].push_str(" José ✓");
        let files: Vec<(String, String)> = render(&spec)
            .unwrap()
            .into_iter()
            .map(|(f, t)| (f.to_string(), t))
            .collect();
        let docs = load_with_cloud_init(&files);
        let key = &docs["user-data"]["users"][0]["ssh_authorized_keys"][0];
        assert!(key[1].as_str().unwrap().ends_with(" José ✓"), "{key}");
    }

    #[test]
    fn seed_iso_has_cidata_label_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seed.iso");
        let files = render(&sample(static_net())).unwrap();
        write_iso(&SystemRunner, &files, &out).unwrap();
        let blkid = std::process::Command::new("blkid")
            .arg(&out)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&blkid.stdout);
        assert!(text.contains("LABEL=\"cidata\""), "{text}");
        assert!(text.contains("TYPE=\"iso9660\""), "{text}");
        let listing = std::process::Command::new("isoinfo")
            .args(["-R", "-f", "-i"])
            .arg(&out)
            .output();
        if let Ok(l) = listing {
            let l = String::from_utf8_lossy(&l.stdout);
            for f in ["/user-data", "/meta-data", "/network-config"] {
                assert!(l.lines().any(|x| x == f), "{f} missing in {l}");
            }
        }
        // Staging files are gone; only the ISO remains, readable by root only.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("seed.iso")]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, crate::disk::FILE_MODE);
        // An existing seed is never overwritten.
        assert!(write_iso(&SystemRunner, &files, &out).is_err());
    }

    #[test]
    fn failed_seed_write_cleans_staging() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seed.iso");
        let runner = hostio::RecordingRunner::failing_at(0);
        let err = write_iso(&runner, &render(&sample(static_net())).unwrap(), &out).unwrap_err();
        assert!(matches!(err, Error::WriteSeed { .. }));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
