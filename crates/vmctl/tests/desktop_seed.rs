//! Every autoinstall seed `create ubuntu --desktop` can generate passes the checks the guest
//! makes: subiquity's autoinstall JSON schema (read from `GVB_AUTOINSTALL_SCHEMA`: subiquity is
//! AGPL, so the schema is not in this repository; CI points the variable at
//! `../shared/data/ubuntu/autoinstall-schema.json`) and `cloud-init schema` for the whole
//! user-data and for the installed system's `autoinstall.user-data`.

use std::path::PathBuf;

use guest_media::autoinstall::{
    AutoinstallSpec, DONE_MARKER, FAILED_MARKER, Flavour, Keyboard, render,
};
use guest_media::seed::{GuestNetwork, SeedSpec};
use serde_json::Value;
use vmctl::desktop::{InstallStatus, install_status};

/// The schema, or `None` (with a message) when the variable is unset. Set but unreadable fails.
fn schema() -> Option<Value> {
    let Ok(path) = std::env::var("GVB_AUTOINSTALL_SCHEMA") else {
        eprintln!(
            "skipped the subiquity schema check: set GVB_AUTOINSTALL_SCHEMA to autoinstall-schema.json"
        );
        return None;
    };
    // Relative paths are meant from the workspace root (CI: ../shared/…); cargo runs tests in
    // the crate's directory, so try both.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let found = [PathBuf::from(&path), root.join(&path)]
        .into_iter()
        .find(|p| p.is_file());
    let text = found
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_else(|| {
            panic!(
                "GVB_AUTOINSTALL_SCHEMA={path} is set but cannot be read (tried it from {} and from the workspace root {})",
                std::env::current_dir().unwrap().display(),
                root.display()
            )
        });
    Some(serde_json::from_str(&text).unwrap())
}

fn cloud_init_schema(text: &str, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p: PathBuf = dir.path().join("user-data");
    std::fs::write(&p, text).unwrap();
    let out = std::process::Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&p)
        .output()
        .expect("cloud-init is installed (apt-get install cloud-init)");
    assert!(
        out.status.success(),
        "cloud-init schema rejected the {what}:\n{text}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn variants() -> Vec<(&'static str, AutoinstallSpec)> {
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnkmqS0xAbuPsE6mVUf1h7gWOY/mOKs7YiFcBPWnOZ6 t@h";
    let spec = |password: bool, nvidia: bool, flavour, network| {
        AutoinstallSpec {
        seed: SeedSpec {
            hostname: "desk1".into(),
            instance_id: "desk1-00000001".into(),
            user: "alice".into(),
            ssh_authorized_keys: vec![key.into()],
            password_hash: password.then(|| {
                "$6$rounds=4096$saltsalt$JX1pKEQ2n0tO7W0yq5x9D2mQbyh6w0TQmM0f4B5Y0V1Q/5m0oE6b7f7QfKjVb2W1y3r5yq3m0aT7m2fQzY9uX0".into()
            }),
            packages: Vec::new(),
            network,
            reset_machine_id: false,
            runcmd: Vec::new(),
            mounts: Vec::new(),
            driver: None,
        },
        flavour,
        nvidia,
        locale: "de_DE.UTF-8".into(),
        keyboard: Keyboard::parse("de:nodeadkeys").unwrap(),
        timezone: "Europe/Berlin".into(),
    }
    };
    let dhcp = GuestNetwork::Dhcp {
        mac: "52:54:00:12:34:56".into(),
    };
    let static_net = GuestNetwork::Static {
        mac: "52:54:00:12:34:57".into(),
        address: "192.0.2.10/24".into(),
        gateway: Some("192.0.2.1".into()),
        dns: vec!["192.0.2.1".into()],
    };
    vec![
        (
            "gpu-password-static",
            spec(true, true, Flavour::Full, static_net.clone()),
        ),
        (
            "key-only-dhcp",
            spec(false, false, Flavour::Full, dhcp.clone()),
        ),
        (
            "minimal-password-dhcp",
            spec(true, false, Flavour::Minimal, dhcp),
        ),
        (
            "minimal-key-only-static",
            spec(false, true, Flavour::Minimal, static_net),
        ),
    ]
}

#[test]
fn every_generated_seed_validates() {
    let schema = schema();
    let validator = schema
        .as_ref()
        .map(|s| jsonschema::validator_for(s).expect("the subiquity schema compiles"));
    for (name, spec) in variants() {
        let files = render(&spec).unwrap();
        let user_data = &files.iter().find(|(n, _)| *n == "user-data").unwrap().1;
        let meta_data = &files.iter().find(|(n, _)| *n == "meta-data").unwrap().1;
        assert!(
            meta_data.contains("instance-id: \"desk1-00000001\""),
            "{name}"
        );
        assert!(user_data.starts_with("#cloud-config\n"), "{name}");

        let doc: Value = serde_yaml::from_str(user_data).unwrap();
        let top: Vec<_> = doc.as_object().unwrap().keys().collect();
        assert_eq!(top, ["autoinstall"], "{name}: everything under autoinstall");
        let ai = &doc["autoinstall"];

        if let Some(v) = &validator {
            let errors: Vec<String> = v.iter_errors(ai).map(|e| e.to_string()).collect();
            assert!(
                errors.is_empty(),
                "{name}: schema errors {errors:?}\n{user_data}"
            );
            // The check is live: a value subiquity refuses fails it.
            let mut bad = ai.clone();
            bad["shutdown"] = "halt".into();
            assert!(
                !v.is_valid(&bad),
                "{name}: the schema accepted shutdown: halt"
            );
        }

        // What the schema leaves open but the install needs.
        assert_eq!(ai["version"], 1, "{name}");
        assert_eq!(ai["shutdown"], "poweroff", "{name}");
        assert_eq!(ai["source"]["id"], spec.flavour.source_id(), "{name}");
        assert_eq!(ai["storage"]["layout"]["name"], "direct", "{name}");
        assert_eq!(ai["keyboard"]["variant"], "nodeadkeys", "{name}");
        assert_eq!(ai["network"]["version"], 2, "{name}");
        assert_eq!(ai["network"]["renderer"], "NetworkManager", "{name}");
        let late = serde_json::to_string(&ai["late-commands"]).unwrap();
        assert!(
            late.contains("qemu-guest-agent") && late.contains("VMCTL_DESKTOP_INSTALL DONE"),
            "{name}"
        );
        assert_eq!(late.contains("ubuntu-drivers"), spec.nvidia, "{name}");
        assert_eq!(
            ai["ssh"]["authorized-keys"][0],
            spec.seed.ssh_authorized_keys[0].as_str()
        );
        match &spec.seed.password_hash {
            Some(h) => {
                assert_eq!(ai["identity"]["password"], h.as_str(), "{name}");
                assert_eq!(ai["identity"]["username"], "alice", "{name}");
            }
            None => {
                assert!(ai.get("identity").is_none(), "{name}");
                assert_eq!(ai["user-data"]["users"][0]["name"], "alice", "{name}");
            }
        }
        assert!(!user_data.contains("plain_text_passwd"), "{name}");
        // Markers are assembled at run time (printf), never present literally.
        assert!(!user_data.contains(DONE_MARKER) && !user_data.contains(FAILED_MARKER));

        // The last late-command, as the guest's shell gets it from the YAML, prints exactly the
        // finish signal --wait looks for.
        let last: Vec<String> = serde_json::from_value(
            ai["late-commands"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()
                .clone(),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("ttyS0");
        let script = last[2].replace("/dev/ttyS0", &console.display().to_string());
        assert!(
            std::process::Command::new(&last[0])
                .args([&last[1], &script])
                .status()
                .unwrap()
                .success()
        );
        let printed = std::fs::read_to_string(&console).unwrap();
        assert_eq!(
            install_status(&printed, false),
            InstallStatus::Finished,
            "{name}: {printed:?}"
        );
        cloud_init_schema(user_data, &format!("{name} user-data"));
        let installed = format!(
            "#cloud-config\n{}",
            serde_yaml::to_string(&ai["user-data"]).unwrap()
        );
        cloud_init_schema(&installed, &format!("{name} autoinstall.user-data"));
    }
}

#[test]
fn schema_variable_set_to_a_missing_file_fails_loudly() {
    // The contract of `schema()`: exercised in a child process so this test's env stays clean.
    if std::env::var("GVB_DESKTOP_SCHEMA_CHILD").is_ok() {
        schema();
        return;
    }
    // This test's own name as the harness lists it: the module path without the crate.
    let name = concat!(
        module_path!(),
        "::schema_variable_set_to_a_missing_file_fails_loudly"
    );
    let name = name.split_once("::").map_or(name, |(_, rest)| rest);
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", name, "--nocapture"])
        .env("GVB_DESKTOP_SCHEMA_CHILD", "1")
        .env(
            "GVB_AUTOINSTALL_SCHEMA",
            "/nonexistent/autoinstall-schema.json",
        )
        .output()
        .unwrap();
    // The filter must have picked this test, or the child's success would mean nothing.
    assert!(String::from_utf8_lossy(&out.stdout).contains("running 1 test"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is set but cannot be read"));
}
