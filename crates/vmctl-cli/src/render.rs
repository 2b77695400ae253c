//! The text views of `list`, `info` and `image verify`, and the table and escaping every text
//! view uses; `--json` prints the library's structs as they are.

use vmctl::commands::inspect;

pub(crate) fn render_verify(r: &vmctl::commands::image::VerifyReport) -> String {
    use vmctl::commands::image::Verdict;
    let mut s = String::new();
    for b in &r.blobs {
        match &b.result {
            Verdict::Ok => s += &format!("ok       {} ({} bytes)\n", b.file, b.size),
            Verdict::Corrupt { actual, moved_to } => {
                s += &format!(
                    "CORRUPT  {}: its bytes hash to {actual}; moved to {}\n",
                    b.file,
                    moved_to.display()
                )
            }
        }
    }
    s += &format!(
        "{} ok, {} corrupt (re-hashed now, in {})\n",
        r.ok,
        r.corrupt,
        r.cache.display()
    );
    s
}

/// Bytes in whole GiB or MiB when they are, else in GiB with two decimals.
pub(crate) fn human_bytes(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        human_bytes_mib(bytes >> 20)
    } else {
        format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
    }
}

pub(crate) fn human_bytes_mib(mib: u64) -> String {
    if mib >= 1024 && mib.is_multiple_of(1024) {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

/// A value from outside (a domain name, a path, guest metadata) for a text view: control and bidi
/// characters shown as `\u{…}` (clikit::escape).
pub(crate) fn esc(s: &str) -> String {
    clikit::escape(s).into_owned()
}

/// Lays out `rows` (the first is the header) with the binaries' one table layout
/// ([`clikit::table`]: widths in terminal columns), each cell escaped first.
pub(crate) fn table(rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.iter().map(|c| esc(c)).collect())
        .collect();
    clikit::table(&rows)
}

pub(crate) fn render_list(list: &inspect::VmList) -> String {
    let mut rows = vec![
        [
            "NAME",
            "STATE",
            "AUTOSTART",
            "VCPUS",
            "MEMORY",
            "GPUS",
            "IPS",
            "OS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for v in &list.vms {
        rows.push(vec![
            if v.vmctl {
                format!("{} *", v.name)
            } else {
                v.name.clone()
            },
            v.state.as_str().into(),
            if v.autostart { "on" } else { "off" }.into(),
            v.vcpus.to_string(),
            human_bytes_mib(v.memory_mib),
            if v.gpus.is_empty() {
                "-".into()
            } else {
                v.gpus.join(",")
            },
            if v.ips.is_empty() {
                "-".into()
            } else {
                v.ips.join(",")
            },
            v.os.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut s = table(rows);
    if list.vms.iter().any(|v| v.vmctl) {
        s.push_str("(* created by vmctl)\n");
    }
    s
}

pub(crate) fn render_info(i: &inspect::VmInfo) -> String {
    let s = &i.summary;
    let path = |p: &std::path::Path| esc(&p.display().to_string());
    let list = |v: &[String], sep: &str| {
        if v.is_empty() {
            "-".into()
        } else {
            esc(&v.join(sep))
        }
    };
    let mut o = format!(
        "Name:       {}{}\nState:      {}\nAutostart:  {}\nType:       {} ({})\nFirmware:   {}\nvCPUs:      {}\nMemory:     {}\n",
        esc(&s.name),
        if s.vmctl { " (created by vmctl)" } else { "" },
        s.state.as_str(),
        if s.autostart { "on" } else { "off" },
        esc(&i.domain_type.to_string()),
        esc(i.machine.as_deref().unwrap_or("-")),
        esc(&i.firmware.to_string()),
        s.vcpus,
        human_bytes_mib(s.memory_mib),
    );
    if let Some(k) = &i.kernel {
        o += &format!(
            "Kernel:     {} ({})\n",
            path(k),
            esc(i.cmdline.as_deref().unwrap_or(""))
        );
    }
    let ips: Vec<String> = s
        .addresses
        .iter()
        .map(|a| format!("{} ({})", a.ip, a.source.as_str()))
        .collect();
    o += &format!("IPs:        {}\n", list(&ips, ", "));
    o += &format!("GPUs:       {}\n", list(&s.gpus, ", "));
    o += "Disks:\n";
    for d in &i.disks {
        o += &format!(
            "  {} {} {} ({}){}{}\n",
            esc(&d.target),
            esc(&d.device),
            d.path.as_deref().map(path).unwrap_or_else(|| "-".into()),
            esc(d.format.as_deref().unwrap_or("?")),
            d.backing
                .as_ref()
                .map(|b| format!(" backing {}", esc(&b.to_string())))
                .unwrap_or_default(),
            if d.readonly { " read-only" } else { "" }
        );
    }
    o += "NICs:\n";
    for n in &i.nics {
        o += &format!(
            "  {} {} {}\n",
            esc(n.mac.as_deref().unwrap_or("-")),
            esc(&n.kind),
            esc(n.source.as_deref().unwrap_or("-"))
        );
    }
    if let Some(m) = &i.metadata {
        o += &format!(
            "vmctl:      os {} {}, user {}, ip {}, created {} by vmctl {}\n",
            esc(&m.os),
            esc(m.release.as_deref().unwrap_or("")),
            esc(m.user.as_deref().unwrap_or("-")),
            esc(m.ip.as_deref().unwrap_or("dhcp")),
            esc(&m.created),
            esc(&m.version)
        );
        if let Some(b) = &m.base_image {
            o += &format!(
                "Base image: {} sha256 {}\n",
                path(b),
                esc(m.base_sha256.as_deref().unwrap_or("(not recorded)"))
            );
        }
    }
    if let Some(l) = &i.console_log {
        o += &format!("Console log: {}\n", path(l));
    }
    o += &format!("Console:    {}\n", esc(&i.console_command));
    o
}

/// `argv` as one shell line that runs it as printed: a word with anything beyond letters,
/// digits and `_./:=,@%+-` is single-quoted.
pub(crate) fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./:=,@%+-".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod shell_line_tests {
    #[test]
    fn words_a_shell_would_change_are_quoted() {
        let argv: Vec<String> = [
            "kubectl",
            "-o",
            "custom-columns=G:.a.nvidia\\.com/gpu",
            "it's",
            "",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            super::shell_line(&argv),
            r"kubectl -o 'custom-columns=G:.a.nvidia\.com/gpu' 'it'\''s' ''"
        );
    }
}
