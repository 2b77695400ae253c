//! Unit tests of `grubcfg`.

use super::*;

fn value(files: &[&str], name: &str) -> Value {
    run(files).unwrap().final_value(name)
}

fn known(s: &str) -> Value {
    Value::Known(s.to_string())
}

#[test]
fn quoting_rules_give_the_shell_value() {
    for (src, want) in [
        (r#"A="quiet splash""#, "quiet splash"),
        (r#"A='a "b" $c'"#, r#"a "b" $c"#),
        (r#"A="x=\"y z\" \\ \$ \` \a""#, r#"x="y z" \ $ ` \a"#),
        ("A=a\\ b\\\nc", "a bc"),
        ("A=\"a \\\nb\"", "a b"),
        ("A=\"a \"'b'\\ c", "a b c"),
        ("A=", ""),
        ("export A=\"x\"  # comment", "x"),
        ("A=1 B=2\nA=\"$A$B\"", "12"),
        ("B=z\nA=\"${B}y\"", "zy"),
        ("A=\"price $ 5\"", "price $ 5"),
        ("A=é\"ü\"", "éü"),
    ] {
        assert_eq!(value(&[src], "A"), known(want), "{src}");
    }
}

#[test]
fn values_only_the_shell_knows_are_unknown() {
    for src in [
        "A=\"$(cat f)\"",
        "A=`cat f`",
        "A=\"${X:-y}\"",
        "A=\"$X\"",
        "A=\"$1\"",
        "A=~/x",
        "A=$((1+2))",
        "A=1\n. /etc/x",
        "A=1\neval \"A=2\"",
        "A=1\nunset A",
        "A=1\nif true; then A=2; fi",
        "A=1\ntrue && A=2",
        "A=1\nA=2 true",
        "A=1\nf() { A=2; }",
        "A=1\ncase x in x) A=2;; esac",
        "A=1\nreadonly A=2",
    ] {
        assert!(
            matches!(value(&[src], "A"), Value::Unknown(_)),
            "{src}: {:?}",
            value(&[src], "A")
        );
    }
    // Unrelated commands and compounds leave it alone.
    for src in [
        "A=1\nif true; then B=2; fi\nexport A",
        "GRUB_DISTRIBUTOR=`( . /etc/os-release; echo ${NAME:-Ubuntu} ) 2>/dev/null || echo Ubuntu`\nA=1",
        "A=1\necho hi > /dev/null 2>&1",
    ] {
        assert_eq!(value(&[src], "A"), known("1"), "{src}");
    }
}

#[test]
fn files_the_reader_cannot_follow_are_reported_with_a_line() {
    for (src, line) in [
        ("A=1\nB=\"open\n", 2),
        ("A=1\ncat <<EOF\nx\nEOF\n", 2),
        ("fi\n", 1),
        ("if true; then\nA=1\n", 3),
    ] {
        let e = run(&[src]).unwrap_err();
        assert_eq!(e.line, line, "{src}: {e:?}");
    }
}

#[test]
fn later_files_see_earlier_ones() {
    let grub = "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n";
    let cfg = "GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT console=ttyS0\"\n";
    assert_eq!(
        value(&[grub, cfg], CMDLINE_DEFAULT),
        known("quiet console=ttyS0")
    );
    let e = edit_cmdline(&[grub, cfg], &["iommu=pt"], &|_| None).unwrap();
    assert_eq!(
        e.write,
        Some((
            1,
            "GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT console=ttyS0 iommu=pt\"\n"
                .to_string()
        ))
    );
}

#[test]
fn kernel_words_keep_quoted_spaces() {
    assert_eq!(
        kernel_words(r#" quiet acpi_osi="Windows 2015"  a=b "#),
        vec!["quiet", r#"acpi_osi="Windows 2015""#, "a=b"]
    );
}

fn off(w: &str) -> Option<Fix> {
    match w {
        "intel_iommu=off" => Some(Fix::Replace("intel_iommu=on".into())),
        "amd_iommu=off" => Some(Fix::Remove),
        _ => None,
    }
}

#[test]
fn edits_keep_the_users_text() {
    let args = ["intel_iommu=on", "iommu=pt"];
    for (src, want) in [
        (
            "A=1\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\" # x\n",
            "A=1\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on iommu=pt\" # x\n",
        ),
        (
            "GRUB_CMDLINE_LINUX_DEFAULT=''\n",
            "GRUB_CMDLINE_LINUX_DEFAULT='intel_iommu=on iommu=pt'\n",
        ),
        (
            "GRUB_CMDLINE_LINUX_DEFAULT=quiet\n",
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on iommu=pt\"\n",
        ),
        (
            "GRUB_CMDLINE_LINUX_DEFAULT=\n",
            "GRUB_CMDLINE_LINUX_DEFAULT=\"intel_iommu=on iommu=pt\"\n",
        ),
        (
            "GRUB_CMDLINE_LINUX_DEFAULT=a\\ b\n",
            "GRUB_CMDLINE_LINUX_DEFAULT=a\\ b\" intel_iommu=on iommu=pt\"\n",
        ),
        (
            "GRUB_DEFAULT=0",
            "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"intel_iommu=on iommu=pt\"\n",
        ),
        (
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=off\"\n",
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on iommu=pt\"\n",
        ),
        (
            "GRUB_CMDLINE_LINUX_DEFAULT=\"amd_iommu=off quiet\"\n",
            "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet intel_iommu=on iommu=pt\"\n",
        ),
    ] {
        let e = edit_cmdline(&[src], &args, &off).unwrap();
        assert_eq!(e.write, Some((0, want.to_string())), "{src}");
        // And once edited, nothing more to do.
        let again = edit_cmdline(&[want], &args, &off).unwrap();
        assert_eq!(again.write, None, "{want}");
    }
}

#[test]
fn a_conflict_outside_the_edited_text_is_refused() {
    let grub = "GRUB_CMDLINE_LINUX_DEFAULT=\"intel_iommu=off\"\n";
    let cfg = "GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT quiet\"\n";
    let e = edit_cmdline(&[grub, cfg], &["intel_iommu=on"], &off).unwrap_err();
    assert_eq!(e.file, 1);
    let linux = "GRUB_CMDLINE_LINUX=\"intel_iommu=off\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"\"\n";
    let e = edit_cmdline(&[linux], &["intel_iommu=on"], &off).unwrap_err();
    assert!(e.why.contains(CMDLINE_LINUX), "{e:?}");
}

#[test]
fn another_value_of_the_same_key_is_kept_and_reported() {
    let src = "GRUB_CMDLINE_LINUX_DEFAULT='iommu=soft'  # keep\n";
    let e = edit_cmdline(&[src], &["iommu=pt"], &off).unwrap();
    assert_eq!(e.write, None);
    assert_eq!(
        e.kept,
        vec![("iommu=soft".to_string(), "iommu=pt".to_string())]
    );
}
