//! What the library-level create tests share: a fixture host root with bridge br0, a private
//! libvirt test-driver node, storage and image cache under the fixture root, and an
//! environment without variables.

use hostio::HostRoot;
use hypervisor::Libvirt;
use vmctl::config::Config;

pub fn no_env(_: &str) -> Option<String> {
    None
}

pub struct TestHost {
    pub dir: tempfile::TempDir,
    pub tree: tempfile::TempDir,
    pub host: HostRoot,
    pub config: Config,
    pub lv: Libvirt,
}

/// The fixture host `host_name` (tests/fixtures/hosts) with bridge br0; TCG domains.
pub fn test_host(host_name: &str) -> TestHost {
    test_host_in(fixture_builder::build_host(host_name))
}

/// [`test_host`] on a tree already built.
pub fn test_host_in(tree: tempfile::TempDir) -> TestHost {
    let dir = tempfile::tempdir().unwrap();
    let host = HostRoot::new(tree.path());
    host.create_dir_all("/sys/class/net/br0/bridge").unwrap();
    let mut config = Config::defaults();
    // vmctl's directories are host paths: under the fixture root, tree/vms and tree/cache.
    config.set("storage_dir", "/vms");
    config.set("image_cache", "/cache");
    config.set("domain_type", "qemu");
    let node = dir.path().join("node.xml");
    std::fs::write(&node, "<node/>\n").unwrap();
    let lv = Libvirt::open(&format!("test://{}", node.display())).unwrap();
    TestHost {
        dir,
        tree,
        host,
        config,
        lv,
    }
}

/// Laid over an NVSwitch host (`base = "hgx-…"`): NVIDIA Fabric Manager running in Shared NVSwitch
/// multitenancy (as tests/fixtures/hosts/synthetic-hgx-shared-nvswitch.toml), so GPUs may go to
/// VMs one by one. For the tests of other things (NUMA, several VMs) on the HGX hosts.
pub const SHARED_NVSWITCH: &str = "[files]\n\
    \"/usr/share/nvidia/nvswitch/fabricmanager.cfg\" = \"FABRIC_MODE=1\\n\"\n\
    \"/proc/4242/comm\" = \"nv-fabricmanage\\n\"\n";
