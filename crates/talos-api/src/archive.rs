//! Extracting the `kubeconfig` file from the tar.gz archive apid streams, with size caps so a
//! misbehaving server cannot exhaust memory.

use std::io::Read;

/// Most compressed bytes accepted from the Kubeconfig stream (a real one is a few KiB).
pub const MAX_ARCHIVE_BYTES: usize = 1 << 20;
/// Most bytes accepted for the extracted `kubeconfig` file.
pub const MAX_KUBECONFIG_BYTES: u64 = 1 << 20;

/// The contents of the entry named `kubeconfig` in a tar.gz archive (what `talosctl
/// kubeconfig` extracts). Err is the reason, for [`crate::Error::Archive`].
pub(crate) fn extract_kubeconfig(
    tar_gz: &[u8],
) -> Result<Vec<u8>, (String, Option<std::io::Error>)> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| (what, Some(e))
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tar_gz));
    for entry in archive.entries().map_err(io("not a tar.gz archive"))? {
        let entry = entry.map_err(io("not a tar.gz archive"))?;
        let path = entry.path().map_err(io("bad entry name"))?;
        // Talos writes the bare name; accept `./kubeconfig` as tar tools write it too.
        if path != std::path::Path::new("kubeconfig")
            && path != std::path::Path::new("./kubeconfig")
        {
            continue;
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(("the kubeconfig entry is not a regular file".into(), None));
        }
        let mut out = Vec::new();
        entry
            .take(MAX_KUBECONFIG_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(io("reading the kubeconfig entry"))?;
        if out.len() as u64 > MAX_KUBECONFIG_BYTES {
            return Err((
                format!("kubeconfig is larger than {MAX_KUBECONFIG_BYTES} bytes"),
                None,
            ));
        }
        return Ok(out);
    }
    Err(("the archive has no kubeconfig entry".into(), None))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut b = tar::Builder::new(gz);
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn kubeconfig_entry_is_extracted() {
        let a = tar_gz(&[("other", b"x"), ("kubeconfig", b"apiVersion: v1\n")]);
        assert_eq!(extract_kubeconfig(&a).unwrap(), b"apiVersion: v1\n");
    }

    #[test]
    fn archive_without_kubeconfig_is_refused() {
        let a = tar_gz(&[("talosconfig", b"x")]);
        assert!(
            extract_kubeconfig(&a)
                .unwrap_err()
                .0
                .contains("no kubeconfig")
        );
    }

    #[test]
    fn kubeconfig_over_the_cap_is_refused() {
        let big = vec![b'a'; MAX_KUBECONFIG_BYTES as usize + 1];
        let a = tar_gz(&[("kubeconfig", &big)]);
        assert!(
            extract_kubeconfig(&a)
                .unwrap_err()
                .0
                .contains("larger than")
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(extract_kubeconfig(b"not gzip").is_err());
    }
}
