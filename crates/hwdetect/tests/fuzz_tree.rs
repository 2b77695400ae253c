//! Property test: detection on trees whose files hold arbitrary text never panics, names every
//! problem as a warning, and a capture of such a tree still round-trips.

use std::fs;

use hostio::HostRoot;
use proptest::prelude::*;

const BASE: &str = r#"
cmdline = "ro"
kvm = true
[cpu]
vendor = "intel"
[os]
id = "ubuntu"
[[device]]
bdf = "00:01.0"
class = "0604"
id = "8086:1901"
group = 1
[[device]]
bdf = "01:00.0"
class = "0300"
id = "10de:2204"
parent = "00:01.0"
group = 1
reset_method = "bus"
[[device]]
bdf = "01:00.1"
class = "0403"
id = "10de:1aef"
parent = "00:01.0"
group = 1
[[nic]]
name = "eth0"
pci = "00:01.0"
addresses = ["198.18.0.2/24"]
gateway = "198.18.0.1"
"#;

const GPU_DIR: &str = "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn arbitrary_file_contents_never_panic(
        files in proptest::collection::vec(
            (0usize..12, "\\PC{0,60}|[0-9a-fx\\n ]{0,12}"), 1..8),
    ) {
        let tree = fixture_builder::build_from_str(BASE).unwrap();
        let targets = [
            "proc/cpuinfo", "proc/cmdline", "usr/lib/os-release", "proc/1/net/route",
            "proc/1/net/fib_trie", "proc/1/net/if_inet6",
            &format!("{GPU_DIR}/class"), &format!("{GPU_DIR}/vendor"),
            &format!("{GPU_DIR}/device"), &format!("{GPU_DIR}/boot_vga"),
            &format!("{GPU_DIR}/reset_method"), &format!("{GPU_DIR}/driver_override"),
        ];
        for (i, content) in &files {
            fs::write(tree.path().join(targets[*i]), content).unwrap();
        }
        let root = HostRoot::new(tree.path());
        let facts = hwdetect::detect(&root);
        prop_assert!(facts.warnings.iter().all(|w| w.starts_with('/')), "{:?}", facts.warnings);

        let out = tempfile::tempdir().unwrap();
        let archive = out.path().join("c.tar.gz");
        hwdetect::capture(&root, &archive).unwrap();
        let x = out.path().join("x");
        tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(&archive).unwrap()))
            .unpack(&x)
            .unwrap();
        prop_assert_eq!(hwdetect::detect(&HostRoot::new(&x)), facts);
    }
}
