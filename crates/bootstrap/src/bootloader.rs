//! The kernel command line on hosts that do not boot through GRUB: systemd-boot
//! (`/etc/kernel/cmdline`, applied by `kernel-install add`) and kernelstub (Pop!_OS:
//! `/etc/kernelstub/configuration`, applied by `kernelstub`). Same contract as the GRUB path
//! ([`crate::grubcfg`]): the file's new content is planned (so it shows as a diff, is backed up
//! and rolled back), then the command that makes the loader use it runs.
//!
//! Sources: kernel-install(8) and systemd's `90-loaderentry.install` (the `options` line of a
//! new entry is `/etc/kernel/cmdline`, else `/usr/lib/kernel/cmdline`, else `/proc/cmdline`
//! without `BOOT_IMAGE=` and `initrd=`); Debian/Ubuntu's systemd-boot package runs
//! `kernel-install add VERSION /boot/vmlinuz-VERSION /boot/initrd.img-VERSION` from
//! `/etc/initramfs/post-update.d/systemd-boot`; pop-os/kernelstub `kernelstub/config.py`
//! (`user.kernel_options`, a list since config_rev 3, written with `json.dump(indent=2)`) and
//! `data/kernel/zz-kernelstub` (the kernel hook runs `kernelstub --verbose
//! --preserve-live-mode`, which writes the loader entry from the configuration).

use hostio::{HostRoot, paths};
use hwdetect::BootLoader;

use crate::grubcfg::{Fix, Fixed, kernel_words};

/// The result of adding arguments to a list of kernel words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WordEdit {
    pub words: Vec<String>,
    pub added: Vec<String>,
    pub fixed: Vec<Fixed>,
    /// `(existing, wanted)`: the line already sets the key to another value; it is kept.
    pub kept: Vec<(String, String)>,
}

impl WordEdit {
    pub fn changed(&self) -> bool {
        !self.added.is_empty() || !self.fixed.is_empty()
    }
}

/// Adds `args` to `words` by the GRUB path's rules: `fix` replaces or removes the arguments
/// that must go (`intel_iommu=off`), an argument already there is not added again, and one
/// whose key is already set to another value is kept as it is.
pub fn edit_words(words: &[&str], args: &[&str], fix: &dyn Fn(&str) -> Option<Fix>) -> WordEdit {
    let mut e = WordEdit::default();
    for w in words {
        match fix(w) {
            Some(Fix::Replace(n)) => {
                e.fixed.push(Fixed {
                    old: w.to_string(),
                    new: Some(n.clone()),
                });
                if !e.words.contains(&n) {
                    e.words.push(n);
                }
            }
            Some(Fix::Remove) => e.fixed.push(Fixed {
                old: w.to_string(),
                new: None,
            }),
            None => e.words.push(w.to_string()),
        }
    }
    for a in args {
        if e.words.iter().any(|w| w == a) {
            continue;
        }
        let key = a.split('=').next().unwrap_or(a);
        if let Some(other) = e
            .words
            .iter()
            .rev()
            .find(|w| w.contains('=') && w.split('=').next() == Some(key))
        {
            e.kept.push((other.clone(), a.to_string()));
            continue;
        }
        e.words.push(a.to_string());
        e.added.push(a.to_string());
    }
    e
}

/// `/etc/kernel/cmdline`'s words, or (when it does not exist) what kernel-install would use
/// instead: `/proc/cmdline` without `BOOT_IMAGE=` and `initrd=` (90-loaderentry.install).
pub fn systemd_boot_words<'a>(file: Option<&'a str>, proc_cmdline: &'a [String]) -> Vec<&'a str> {
    match file {
        Some(text) => kernel_words(text),
        None => proc_cmdline
            .iter()
            .map(String::as_str)
            .filter(|w| !w.starts_with("BOOT_IMAGE=") && !w.starts_with("initrd="))
            .collect(),
    }
}

/// The commands that make systemd-boot's entries carry `/etc/kernel/cmdline`: one
/// `kernel-install add` per installed kernel, as the distribution's hook runs it.
pub fn kernel_install_commands(kernels: &[String]) -> Vec<Vec<String>> {
    kernels
        .iter()
        .map(|k| {
            vec![
                "kernel-install".to_string(),
                "add".to_string(),
                k.clone(),
                format!("{}/vmlinuz-{k}", paths::BOOT),
                format!("{}/initrd.img-{k}", paths::BOOT),
            ]
        })
        .collect()
}

/// What kernelstub's hook runs: the loader entry is rewritten from the configuration.
pub fn kernelstub_command() -> Vec<String> {
    ["kernelstub", "--verbose", "--preserve-live-mode"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Why a kernelstub configuration cannot be edited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelstubUnreadable(pub String);

/// The `user.kernel_options` of a kernelstub configuration (falling back to `default`'s, as
/// kernelstub does when `user` is missing). A string (config_rev < 3) is split on spaces, as
/// kernelstub's own upgrade does.
pub fn kernelstub_options(text: &str) -> Result<Vec<String>, KernelstubUnreadable> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| KernelstubUnreadable(format!("it is not valid JSON: {e}")))?;
    let section = v
        .get("user")
        .or_else(|| v.get("default"))
        .ok_or_else(|| KernelstubUnreadable("it has neither `user` nor `default`".into()))?;
    match section.get("kernel_options") {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|o| {
                o.as_str().map(str::to_string).ok_or_else(|| {
                    KernelstubUnreadable("`kernel_options` holds a non-string".into())
                })
            })
            .collect(),
        Some(serde_json::Value::String(s)) => {
            Ok(s.split_whitespace().map(str::to_string).collect())
        }
        _ => Err(KernelstubUnreadable(
            "it has no `kernel_options` list".into(),
        )),
    }
}

/// The configuration with `user.kernel_options` set to `options`, every other key and its
/// order kept, in kernelstub's own layout (2-space indented JSON).
pub fn kernelstub_with_options(
    text: &str,
    options: &[String],
) -> Result<String, KernelstubUnreadable> {
    let mut v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| KernelstubUnreadable(format!("it is not valid JSON: {e}")))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| KernelstubUnreadable("it is not a JSON object".into()))?;
    if !obj.contains_key("user") {
        let default = obj
            .get("default")
            .cloned()
            .ok_or_else(|| KernelstubUnreadable("it has neither `user` nor `default`".into()))?;
        obj.insert("user".into(), default);
    }
    let user = obj
        .get_mut("user")
        .and_then(|u| u.as_object_mut())
        .ok_or_else(|| KernelstubUnreadable("`user` is not an object".into()))?;
    user.insert(
        "kernel_options".into(),
        serde_json::Value::Array(
            options
                .iter()
                .map(|o| serde_json::Value::String(o.clone()))
                .collect(),
        ),
    );
    let mut out = serde_json::to_string_pretty(&v)
        .map_err(|e| KernelstubUnreadable(format!("cannot serialise it: {e}")))?;
    out.push('\n');
    Ok(out)
}

/// The commands that make a restored boot loader file effective again (for `rollback`).
pub fn follow_ups(root: &HostRoot, changed: &[&str]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    if changed.contains(&paths::ETC_KERNEL_CMDLINE) {
        let kernels: Vec<String> = root
            .read_dir_names(paths::BOOT)
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n.strip_prefix("vmlinuz-"))
            .map(str::to_string)
            .collect();
        out.extend(kernel_install_commands(&kernels));
    }
    if changed.contains(&paths::ETC_KERNELSTUB_CONFIG) {
        out.push(kernelstub_command());
    }
    out
}

/// How `verify` and the plan's help name where the command line is set.
pub fn where_cmdline_lives(loader: BootLoader) -> String {
    match loader {
        BootLoader::Grub => format!("{} (then `sudo update-grub`)", paths::ETC_DEFAULT_GRUB),
        BootLoader::SystemdBoot => format!(
            "{} (then `sudo kernel-install add $(uname -r) /boot/vmlinuz-$(uname -r) /boot/initrd.img-$(uname -r)`)",
            paths::ETC_KERNEL_CMDLINE
        ),
        BootLoader::Kernelstub => format!(
            "{} (`sudo kernelstub -a \"ARGS\"` edits it and the loader entry)",
            paths::ETC_KERNELSTUB_CONFIG
        ),
        BootLoader::Unknown => "your boot loader's configuration".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_gain_missing_args_only() {
        let e = edit_words(
            &["ro", "quiet", "iommu=pt"],
            &["intel_iommu=on", "iommu=pt"],
            &|_| None,
        );
        assert_eq!(e.words, ["ro", "quiet", "iommu=pt", "intel_iommu=on"]);
        assert_eq!(e.added, ["intel_iommu=on"]);
        let e = edit_words(&["iommu=soft"], &["iommu=pt"], &|_| None);
        assert_eq!(e.kept, [("iommu=soft".to_string(), "iommu=pt".to_string())]);
        assert!(!e.changed());
        let e = edit_words(&["intel_iommu=off", "ro"], &["intel_iommu=on"], &|w| {
            (w == "intel_iommu=off").then(|| Fix::Replace("intel_iommu=on".into()))
        });
        assert_eq!(e.words, ["intel_iommu=on", "ro"]);
        assert!(e.added.is_empty() && e.changed());
    }

    #[test]
    fn systemd_boot_falls_back_to_proc_cmdline_like_kernel_install() {
        let proc: Vec<String> = [
            "initrd=\\x\\initrd",
            "BOOT_IMAGE=/vmlinuz",
            "root=UUID=1",
            "ro",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(systemd_boot_words(None, &proc), ["root=UUID=1", "ro"]);
        assert_eq!(
            systemd_boot_words(Some("a  b\nc\n"), &proc),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn kernelstub_options_round_trip_keeps_the_rest() {
        let text = "{\n  \"default\": {\n    \"kernel_options\": [\n      \"quiet\"\n    ],\n    \"esp_path\": \"/boot/efi\"\n  },\n  \"user\": {\n    \"kernel_options\": [\n      \"quiet\",\n      \"splash\"\n    ],\n    \"esp_path\": \"/boot/efi\",\n    \"config_rev\": 3\n  }\n}\n";
        assert_eq!(kernelstub_options(text).unwrap(), ["quiet", "splash"]);
        let same = kernelstub_with_options(text, &["quiet".into(), "splash".into()]).unwrap();
        assert_eq!(same, text, "kernelstub's own layout is kept");
        let new = kernelstub_with_options(text, &["quiet".into(), "iommu=pt".into()]).unwrap();
        assert!(new.contains("\"iommu=pt\""));
        assert!(new.find("\"default\"") < new.find("\"user\""));
        assert!(kernelstub_options("{").is_err());
        assert_eq!(
            kernelstub_options(r#"{"default":{"kernel_options":"quiet splash"}}"#).unwrap(),
            ["quiet", "splash"]
        );
    }
}
