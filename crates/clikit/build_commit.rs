// The build-script body shared by gpu-vm-bootstrap and vmctl: puts the git commit into
// `--version` as `GVB_BUILD_VERSION`, e.g. `0.1.0 (1a2b3c4)`, `0.1.0 (1a2b3c4-dirty)`, or
// `0.1.0 (unknown)` outside a git checkout (a source tarball). `GVB_GIT_COMMIT` overrides the
// lookup (packaging/release.sh sets it so the release binaries name the exact tree they were
// built from). Each crate's build.rs pulls this file in with `include!`; plain `//` comments
// here because `include!` takes no inner doc attributes. Not a module of clikit.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=GVB_GIT_COMMIT");
    let commit = match std::env::var("GVB_GIT_COMMIT") {
        Ok(c) if !c.is_empty() => c,
        _ => match git(&["rev-parse", "--short", "HEAD"]) {
            Some(hash) => {
                // Rebuild when HEAD moves (a commit or a checkout), not on every edit: the
                // `-dirty` mark reflects the tree as it was when this script last ran.
                // A path that does not exist would make cargo re-run this on every build, so
                // only existing files are named (a packed ref lives in packed-refs).
                if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
                    let mut watch = vec![
                        format!("{dir}/HEAD"),
                        format!("{dir}/packed-refs"),
                        format!("{dir}/refs/heads"),
                    ];
                    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                        watch.push(format!("{dir}/{r}"));
                    }
                    for w in watch.iter().filter(|w| std::path::Path::new(w).exists()) {
                        println!("cargo:rerun-if-changed={w}");
                    }
                }
                let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                    .is_some_and(|s| !s.is_empty());
                if dirty { format!("{hash}-dirty") } else { hash }
            }
            None => "unknown".to_string(),
        },
    };
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=GVB_BUILD_VERSION={version} ({commit})");
}
