//! Differential test: offline schematic YAML/IDs against go-yaml v3 itself (tests/go-yaml-oracle).
//!
//! Random schematics (extension names, kernel args and META values drawn from characters that
//! stress YAML scalar resolution) go through both our emitter and the Go program. Whenever we
//! compute an ID offline, it must equal go-yaml's byte for byte; refusals are allowed (the online
//! mode covers them). Needs `go` and Debian's golang-gopkg-yaml.v3-dev, so it runs with GVB_LAB=1
//! (CI) and fails loudly there if they are missing.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use talos_image::schematic::{
    Customization, DiskImage, MetaValue, Overlay, Schematic, SecureBoot, SystemExtensions,
};

const CASES: usize = 20_000;
const GOPATH: &str = "/usr/share/gocode";

#[derive(Deserialize)]
struct GoAnswer {
    yaml: String,
    id: String,
}

fn random_string(rng: &mut StdRng) -> String {
    const CHARS: &[u8] = b"abcyYnNoOtTfFeEx0123456789.-_=,:/ #+~'\"!&*|>%@[]{}?<\\";
    const WORDS: &[&str] = &[
        "siderolabs/",
        "nvidia-",
        "console=ttyS0,115200",
        "true",
        "null",
        "0x1F",
        "1e3",
        "-",
        ".",
        ": ",
        " #",
        "...",
        "---",
        "yes",
        "~",
        "1:20",
        "2001-12-14",
        ".inf",
        "<<",
        "=",
    ];
    let mut s = String::new();
    for _ in 0..rng.random_range(1..5) {
        if rng.random_bool(0.3) {
            s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        } else {
            for _ in 0..rng.random_range(1..6) {
                s.push(CHARS[rng.random_range(0..CHARS.len())] as char);
            }
        }
    }
    s
}

fn random_schematic(rng: &mut StdRng) -> Schematic {
    let list = |rng: &mut StdRng| -> Vec<String> {
        (0..rng.random_range(0..3))
            .map(|_| random_string(rng))
            .collect()
    };
    let extra_kernel_args = list(rng);
    let official_extensions = list(rng);
    let meta = (0..rng.random_range(0..2))
        .map(|_| MetaValue {
            key: rng.random(),
            value: random_string(rng),
        })
        .collect();
    Schematic {
        customization: Customization {
            extra_kernel_args,
            meta,
            system_extensions: SystemExtensions {
                official_extensions,
            },
            bootloader: rng.random_bool(0.1).then(|| "sd-boot".to_string()),
            secureboot: SecureBoot {
                enroll_keys: None,
                include_well_known_certificates: rng.random_bool(0.1),
            },
            disk_image: DiskImage {
                sector_size: rng.random_bool(0.1).then(|| rng.random_range(0..8192)),
            },
            ..Default::default()
        },
        overlay: if rng.random_bool(0.2) {
            Overlay {
                image: random_string(rng),
                name: random_string(rng),
                options: (0..rng.random_range(0..3))
                    .map(|_| {
                        let key: String = (0..rng.random_range(1..6))
                            .map(|_| rng.random_range(b'A'..=b'z') as char)
                            .filter(char::is_ascii_alphabetic)
                            .collect();
                        (key, random_string(rng))
                    })
                    .collect(),
            }
        } else {
            Overlay::default()
        },
        ..Default::default()
    }
}

#[test]
#[ignore = "lab: needs go and golang-gopkg-yaml.v3-dev; run with GVB_LAB=1 and --include-ignored"]
fn offline_ids_equal_go_yaml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("oracle");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go-yaml-oracle/main.go");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(src)
        .env("GOPATH", GOPATH)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", dir.path().join("cache"))
        .status()
        .expect("run `go build` (apt-get install golang-go golang-gopkg-yaml.v3-dev)");
    assert!(status.success(), "go build of the oracle failed");

    let mut rng = StdRng::seed_from_u64(0x7a105);
    let cases: Vec<Schematic> = (0..CASES).map(|_| random_schematic(&mut rng)).collect();
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("oracle");
    let mut stdin = child.stdin.take().expect("stdin");
    let input: String = cases
        .iter()
        .map(|s| serde_json::to_string(s).expect("json") + "\n")
        .collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let answers: Vec<GoAnswer> = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map(|l| serde_json::from_str(&l.expect("line")).expect("answer"))
        .collect();
    writer.join().expect("join").expect("write");
    assert!(child.wait().expect("wait").success());
    assert_eq!(answers.len(), cases.len());

    let mut offline = 0;
    for (s, go) in cases.iter().zip(&answers) {
        if let Ok(ours) = s.id() {
            offline += 1;
            assert_eq!(ours.yaml, go.yaml, "schematic {s:?}");
            assert_eq!(ours.id, go.id);
        }
    }
    println!("{offline} of {CASES} random schematics computed offline, all equal to go-yaml");
    assert!(
        offline > CASES / 10,
        "too few offline computations: {offline}"
    );
}
