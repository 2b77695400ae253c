//! virtiofs mounts in the guest, made by cloud-init: an `/etc/fstab` line per share (so it
//! comes back at every boot) and, at first boot, `mkdir` + `mount` in `runcmd`, which runs
//! before cloud-init reports done (so a share is mounted when `vmctl create --wait` returns).
//!
//! Not cloud-init's `mounts:` module: cloud-init 22.4 (Debian 12) passes each device name
//! through `cc_mounts.sanitize_devname`, which keeps only block devices, `LABEL=`/`UUID=`
//! names and `host:path` network names; a virtiofs tag is none of these, so the entry is
//! dropped with "Ignoring nonexistent named mount".

use serde::Serialize;

/// One virtiofs share, mounted at `/mnt/<tag>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestMount {
    /// The virtiofs tag (`<target dir>`): a safe identifier ([`valid_tag`]).
    pub tag: String,
    /// Mounted read-only in the guest.
    pub readonly: bool,
}

/// The longest tag: the virtio-fs device config's `tag` field is 36 bytes (virtio spec 1.2,
/// 5.11.4 "Device configuration layout").
pub const TAG_MAX: usize = 36;

/// A tag vmctl accepts: 1–36 of `[A-Za-z0-9_-]`, starting with a letter or digit. Such a tag
/// is also a safe directory name and fstab field (no blanks, no escapes needed).
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= TAG_MAX
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric())
}

impl GuestMount {
    pub fn mount_point(&self) -> String {
        format!("/mnt/{}", self.tag)
    }
    /// Its fstab(5) line. `nofail`: a share missing at a later boot (removed with
    /// `vmctl share remove`) does not stop the boot.
    pub fn fstab_line(&self) -> String {
        let opts = if self.readonly {
            "ro,nofail"
        } else {
            "defaults,nofail"
        };
        format!("{} {} virtiofs {opts} 0 0\n", self.tag, self.mount_point())
    }
}

/// cloud-init `write_files` entry.
#[derive(Debug, Serialize)]
pub(crate) struct WriteFile {
    pub path: String,
    pub content: String,
    /// `b64`: `content` is base64 (binary files such as an apt keyring).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub append: bool,
}

/// The user-data additions for `mounts`: the fstab lines and the first-boot commands.
pub(crate) fn user_data_parts(mounts: &[GuestMount]) -> (Vec<WriteFile>, Vec<Vec<String>>) {
    if mounts.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let content: String = mounts.iter().map(GuestMount::fstab_line).collect();
    let files = vec![WriteFile {
        path: "/etc/fstab".into(),
        content,
        encoding: None,
        permissions: None,
        append: true,
    }];
    let mut cmds = Vec::new();
    for m in mounts {
        cmds.push(vec!["mkdir".into(), "-p".into(), m.mount_point()]);
        cmds.push(vec!["mount".into(), m.mount_point()]);
    }
    (files, cmds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for ok in ["models", "data_1", "a", "ds-2024", &"x".repeat(36)] {
            assert!(valid_tag(ok), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "_x",
            "a b",
            "a/b",
            "a:b",
            "ä",
            "..",
            &"x".repeat(37),
        ] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }

    #[test]
    fn fstab_lines() {
        let m = GuestMount {
            tag: "models".into(),
            readonly: false,
        };
        assert_eq!(
            m.fstab_line(),
            "models /mnt/models virtiofs defaults,nofail 0 0\n"
        );
        let r = GuestMount {
            readonly: true,
            ..m
        };
        assert_eq!(
            r.fstab_line(),
            "models /mnt/models virtiofs ro,nofail 0 0\n"
        );
    }
}
