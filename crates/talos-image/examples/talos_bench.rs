//! Timings for `scripts/bench/40-talos.sh`: offline schematic ID, secrets generation (RSA-4096
//! service-account keygen measured on its own) and machine-config rendering.
//!
//! Prints one line per measurement: `name mean_ms min_ms max_ms runs`.

use std::time::{Duration, Instant};

use talos_image::machineconfig::{self, ConfigInput, NodePatch, Role, StaticIp};
use talos_image::nvidia::{Driver, NvidiaPreset};
use talos_image::secrets::{SecretsBundle, SecretsOptions};

use talos_image::{Endpoints, TalosVersion};

fn measure<T>(name: &str, runs: usize, mut f: impl FnMut() -> T) {
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        std::hint::black_box(f());
        times.push(start.elapsed());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let total: Duration = times.iter().sum();
    let min = times.iter().min().copied().unwrap_or_default();
    let max = times.iter().max().copied().unwrap_or_default();
    println!(
        "{name} {:.4} {:.4} {:.4} {runs}",
        ms(total) / runs as f64,
        ms(min),
        ms(max)
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rsa_runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3);
    let version = TalosVersion::parse("v1.12.1")?;

    let preset = NvidiaPreset::for_vm(Driver::Open);
    measure("schematic_id", 10_000, || {
        preset.schematic().id().map(|s| s.id)
    });

    measure("rsa4096_keygen", rsa_runs, || {
        talos_image::secrets::generate_service_account_key(4096)
    });
    let sa_key = talos_image::secrets::generate_service_account_key(4096)?;
    measure("secrets_without_rsa_keygen", 20, || {
        SecretsBundle::generate_with(
            &version,
            SecretsOptions {
                service_account_key: Some(sa_key.clone()),
                ..Default::default()
            },
        )
    });
    measure("secrets_full", rsa_runs, || {
        SecretsBundle::generate(&version)
    });

    let secrets = SecretsBundle::generate_with(
        &version,
        SecretsOptions {
            service_account_key: Some(sa_key),
            ..Default::default()
        },
    )?;
    let endpoints = Endpoints::default();
    let schematic = preset.schematic().id()?.id;
    let patch = NodePatch {
        hostname: Some("gpu1".into()),
        static_ip: Some(StaticIp {
            mac: "52:54:00:12:34:56".into(),
            address: "198.18.0.11/24".parse()?,
            gateway: Some("198.18.0.1".parse()?),
            nameservers: vec!["198.18.0.1".parse()?],
        }),
        gpu: true,
        ..Default::default()
    };
    for v in ["v1.11.5", "v1.12.1", "v1.14.0"] {
        let tv = TalosVersion::parse(v)?;
        let mut input = ConfigInput::new("bench", "https://198.18.0.10:6443", tv.clone());
        input.installer_image = endpoints.installer_image("nocloud", &schematic, &tv, false);
        measure(&format!("node_config_{v}"), 500, || {
            machineconfig::node_config(&input, &secrets, Role::Controlplane, &patch)
        });
    }
    let input = ConfigInput::new("bench", "https://198.18.0.10:6443", version.clone());
    measure("talosconfig_admin_cert", 200, || {
        machineconfig::talosconfig(&input, &secrets, time::OffsetDateTime::now_utc())
    });
    Ok(())
}
