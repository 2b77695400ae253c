//! Image Factory schematics: the typed model, the canonical YAML the factory re-marshals, and the ID.
//!
//! The factory (siderolabs/image-factory `pkg/schematic`) unmarshals the posted schematic into Go
//! structs and re-marshals it with go-yaml (v4 with v3 defaults): 4-space indent, sequences indented
//! under their key, struct field order, `omitempty` everywhere except `customization`. The ID is the
//! lowercase hex SHA-256 of those bytes. We emit the YAML by hand so the bytes are ours to control;
//! a string go-yaml might quote, fold or block-style is refused here (see [`check_plain_safe`]) and
//! the caller falls back to the online mode, which asks the factory for the ID.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

/// A schematic as the Image Factory models it (fields in the factory's struct order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Schematic {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Overlay::is_empty")]
    pub overlay: Overlay,
    #[serde(default)]
    pub customization: Customization,
}

/// Board overlay (SBCs); VMs leave it empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Overlay {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Overlay options. Only string values are modelled; go-yaml sorts map keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        self.image.is_empty() && self.name.is_empty() && self.options.is_empty()
    }
}

/// `customization:` — every field is `omitempty` upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Customization {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded_machine_configuration: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_kernel_args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meta: Vec<MetaValue>,
    #[serde(default, skip_serializing_if = "SystemExtensions::is_empty")]
    pub system_extensions: SystemExtensions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<String>,
    #[serde(default, skip_serializing_if = "SecureBoot::is_empty")]
    pub secureboot: SecureBoot,
    #[serde(default, skip_serializing_if = "DiskImage::is_empty")]
    pub disk_image: DiskImage,
}

/// One META partition value (`key` is a u8 upstream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaValue {
    pub key: u8,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SystemExtensions {
    /// Full names, e.g. `siderolabs/qemu-guest-agent`. Order matters for the ID; not sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub official_extensions: Vec<String>,
}

impl SystemExtensions {
    pub fn is_empty(&self) -> bool {
        self.official_extensions.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecureBoot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enroll_keys: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_well_known_certificates: bool,
}

impl SecureBoot {
    pub fn is_empty(&self) -> bool {
        self.enroll_keys.is_none() && !self.include_well_known_certificates
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DiskImage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector_size: Option<u32>,
}

impl DiskImage {
    pub fn is_empty(&self) -> bool {
        self.sector_size.is_none()
    }
}

/// A schematic's canonical bytes and ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchematicId {
    pub id: String,
    pub yaml: String,
}

impl Schematic {
    /// A schematic with just these official extensions.
    pub fn with_extensions<I, S>(extensions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut s = Schematic::default();
        s.customization.system_extensions.official_extensions =
            extensions.into_iter().map(Into::into).collect();
        s
    }

    /// Parse a user-supplied schematic file (YAML or JSON; unknown fields are rejected like the factory does).
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        serde_yaml::from_str(text).map_err(|source| Error::ParseSchematic { source })
    }

    /// The canonical YAML, byte-exact with the factory, or a refusal when a string is not plain-safe.
    pub fn canonical_yaml(&self) -> Result<String, Error> {
        let mut out = String::new();
        emit_map(&mut out, &self.to_node()?, 0, false);
        Ok(out)
    }

    /// The offline ID: sha256 of [`Self::canonical_yaml`].
    pub fn id(&self) -> Result<SchematicId, Error> {
        let yaml = self.canonical_yaml()?;
        Ok(SchematicId {
            id: id_of(yaml.as_bytes()),
            yaml,
        })
    }

    fn to_node(&self) -> Result<Vec<(String, Node)>, Error> {
        let mut top = Vec::new();
        if let Some(owner) = &self.owner {
            top.push(("owner".into(), plain("owner", owner)?));
        }
        if !self.overlay.is_empty() {
            let o = &self.overlay;
            let mut m = Vec::new();
            if !o.image.is_empty() {
                m.push(("image".into(), plain("overlay.image", &o.image)?));
            }
            if !o.name.is_empty() {
                m.push(("name".into(), plain("overlay.name", &o.name)?));
            }
            if !o.options.is_empty() {
                let mut opts = Vec::new();
                for (k, v) in &o.options {
                    // go-yaml sorts map keys with a "natural" order that only equals byte order
                    // for purely alphabetic keys (yaml.v3 sorter.go keyList.Less).
                    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphabetic()) {
                        return Err(not_plain(
                            "overlay.options key",
                            k,
                            "only alphabetic option keys sort predictably",
                        ));
                    }
                    opts.push((k.clone(), plain("overlay.options", v)?));
                }
                m.push(("options".into(), Node::Map(opts)));
            }
            top.push(("overlay".into(), Node::Map(m)));
        }
        let c = &self.customization;
        let mut m = Vec::new();
        if let Some(cfg) = &c.embedded_machine_configuration {
            m.push((
                "embeddedMachineConfiguration".into(),
                plain("customization.embeddedMachineConfiguration", cfg)?,
            ));
        }
        if !c.extra_kernel_args.is_empty() {
            let items = c
                .extra_kernel_args
                .iter()
                .map(|a| plain("customization.extraKernelArgs", a))
                .collect::<Result<_, _>>()?;
            m.push(("extraKernelArgs".into(), Node::Seq(items)));
        }
        if !c.meta.is_empty() {
            let mut items = Vec::new();
            for mv in &c.meta {
                items.push(Node::Map(vec![
                    ("key".into(), Node::Scalar(mv.key.to_string())),
                    (
                        "value".into(),
                        plain("customization.meta.value", &mv.value)?,
                    ),
                ]));
            }
            m.push(("meta".into(), Node::Seq(items)));
        }
        if !c.system_extensions.is_empty() {
            let items = c
                .system_extensions
                .official_extensions
                .iter()
                .map(|e| plain("customization.systemExtensions.officialExtensions", e))
                .collect::<Result<_, _>>()?;
            m.push((
                "systemExtensions".into(),
                Node::Map(vec![("officialExtensions".into(), Node::Seq(items))]),
            ));
        }
        if let Some(b) = &c.bootloader {
            m.push(("bootloader".into(), plain("customization.bootloader", b)?));
        }
        if !c.secureboot.is_empty() {
            let mut sb = Vec::new();
            if let Some(k) = &c.secureboot.enroll_keys {
                sb.push((
                    "enrollKeys".into(),
                    plain("customization.secureboot.enrollKeys", k)?,
                ));
            }
            if c.secureboot.include_well_known_certificates {
                sb.push((
                    "includeWellKnownCertificates".into(),
                    Node::Scalar("true".into()),
                ));
            }
            m.push(("secureboot".into(), Node::Map(sb)));
        }
        if let Some(size) = c.disk_image.sector_size {
            m.push((
                "diskImage".into(),
                Node::Map(vec![("sectorSize".into(), Node::Scalar(size.to_string()))]),
            ));
        }
        top.push(("customization".into(), Node::Map(m)));
        Ok(top)
    }
}

/// sha256 hex of canonical bytes (the factory's ID function).
pub fn id_of(canonical: &[u8]) -> String {
    hex::encode(Sha256::digest(canonical))
}

enum Node {
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

fn plain(field: &str, value: &str) -> Result<Node, Error> {
    check_plain_safe(value).map_err(|reason| not_plain(field, value, reason))?;
    Ok(Node::Scalar(value.to_string()))
}

fn not_plain(field: &str, value: &str, reason: &'static str) -> Error {
    Error::SchematicNotPlainSafe {
        field: field.to_string(),
        value: value.to_string(),
        reason,
    }
}

/// go-yaml block emitter, indent 4, sequences at +4 under their key (`yaml.v3` `SetIndent(4)`).
/// `inline_first`: the first key goes right after a `- ` already written.
fn emit_map(out: &mut String, entries: &[(String, Node)], indent: usize, inline_first: bool) {
    for (i, (key, value)) in entries.iter().enumerate() {
        if !(i == 0 && inline_first) {
            push_indent(out, indent);
        }
        out.push_str(key);
        out.push(':');
        match value {
            Node::Scalar(s) => {
                out.push(' ');
                out.push_str(s);
                out.push('\n');
            }
            Node::Map(m) if m.is_empty() => out.push_str(" {}\n"),
            Node::Map(m) => {
                out.push('\n');
                emit_map(out, m, indent + 4, false);
            }
            Node::Seq(items) if items.is_empty() => out.push_str(" []\n"),
            Node::Seq(items) => {
                out.push('\n');
                for item in items {
                    push_indent(out, indent + 4);
                    out.push_str("- ");
                    match item {
                        Node::Scalar(s) => {
                            out.push_str(s);
                            out.push('\n');
                        }
                        Node::Map(m) if m.is_empty() => out.push_str("{}\n"),
                        Node::Map(m) => emit_map(out, m, indent + 6, true),
                        // The schematic has no nested sequences.
                        Node::Seq(_) => out.push_str("[]\n"),
                    }
                }
            }
        }
    }
}

fn push_indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// Words YAML 1.1/1.2 resolve to bool or null; go-yaml v3 quotes all of them (resolve.go, isOldBool).
const NON_STRING_WORDS: &[&str] = &[
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", ".inf", "+.inf", "-.inf",
    ".nan", "<<", "=",
];

/// Conservative version of go-yaml's "may this string be emitted plain?" decision
/// (yaml.v3 encode.go `stringv` + emitterc.go `yaml_emitter_analyze_scalar`).
///
/// It errs towards refusing: a refused string is still fine for the factory, it just has to go
/// through the online mode. Returns the reason on refusal.
pub fn check_plain_safe(s: &str) -> Result<(), &'static str> {
    let Some(first) = s.chars().next() else {
        return Err("an empty string is emitted quoted");
    };
    if s.chars().any(|c| !(' '..='~').contains(&c)) {
        return Err("non-ASCII or control characters (newline, tab) change the scalar style");
    }
    if s.starts_with(' ') || s.ends_with(' ') {
        return Err("leading or trailing spaces force quoting");
    }
    // A leading '.' is fine (".foo") unless it starts "..." (document end) or a number;
    // a leading '+' is refused outright (YAML 1.1 ints like "+_0").
    let dot_ok = first == '.' && s.len() > 1 && !s.starts_with("..") && !looks_numeric(s);
    // "-arg" (Talos: drop a default kernel argument) is plain when a letter follows the dash.
    let dash_ok = first == '-' && s.as_bytes().get(1).is_some_and(u8::is_ascii_alphabetic);
    if "-+?:,[]{}#&*!|>'\"%@`<.".contains(first) && !dot_ok && !dash_ok {
        return Err("it starts with a YAML indicator character");
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return Err("it contains ': ' or ' #' or ends with ':'");
    }
    if s.contains(['"', '\'', '`', '#', '\\']) {
        return Err("quotes, backslashes and '#' are left to the factory");
    }
    if NON_STRING_WORDS.contains(&s.to_ascii_lowercase().as_str()) {
        return Err("it would parse as a bool, null or special float");
    }
    if looks_numeric(s) {
        return Err("it would parse as a number or timestamp");
    }
    Ok(())
}

/// Anything that starts like a number and only uses characters found in YAML ints, floats,
/// base-60 numbers and timestamps: refuse rather than reimplement every resolver regex.
fn looks_numeric(s: &str) -> bool {
    // go-yaml drops '_' before trying ParseInt/ParseFloat on anything starting with [0-9+-.].
    let t = s.replace('_', "");
    let b = t.as_bytes();
    if b.is_empty() {
        return false;
    }
    let starts = b[0].is_ascii_digit()
        || (matches!(b[0], b'+' | b'-' | b'.')
            && b.get(1).is_some_and(|c| c.is_ascii_digit() || *c == b'.'));
    starts
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() || "xXoObB_.:+-eEtTzZ ".contains(c))
}

#[cfg(test)]
mod tests;
