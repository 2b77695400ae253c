//! A small YAML emitter for the documents vmctl writes for guests (cloud-init, autoinstall).
//! Every string is double-quoted: guests parse YAML 1.1 (PyYAML), where unquoted `on`, `yes` or
//! an all-digit MAC such as `52:54:00:12:34:56` (a base-60 integer!) change type, and the serde
//! YAML emitters only quote what is ambiguous in YAML 1.2.

use serde::Serialize;
use serde_json::Value;

/// Serialises `value` as block-style YAML with quoted strings.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let v = serde_json::to_value(value)?;
    let mut out = String::new();
    match &v {
        Value::Object(m) if !m.is_empty() => emit_map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => emit_seq(a, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    Ok(out)
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        // Nested containers in flow style are JSON, which is valid YAML.
        other => other.to_string(),
    }
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && k.starts_with(|c: char| c.is_ascii_alphabetic())
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        k.to_string()
    } else {
        Value::String(k.into()).to_string()
    }
}

fn is_block(v: &Value) -> bool {
    matches!(v, Value::Object(m) if !m.is_empty()) || matches!(v, Value::Array(a) if !a.is_empty())
}

fn emit_map(m: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    for (k, v) in m {
        match v {
            Value::Object(inner) if !inner.is_empty() => {
                out.push_str(&format!("{pad}{}:\n", key(k)));
                emit_map(inner, indent + 2, out);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push_str(&format!("{pad}{}:\n", key(k)));
                emit_seq(items, indent + 2, out);
            }
            other => out.push_str(&format!("{pad}{}: {}\n", key(k), scalar(other))),
        }
    }
}

fn emit_seq(items: &[Value], indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    for item in items {
        match item {
            Value::Object(m) if !m.is_empty() => {
                let mut inner = String::new();
                emit_map(m, indent + 2, &mut inner);
                // The first key goes on the dash line.
                out.push_str(&format!("{pad}- {}", &inner[indent + 2..]));
            }
            Value::Array(a) if a.iter().all(|x| !is_block(x)) => {
                out.push_str(&format!("{pad}- {}\n", Value::Array(a.clone())));
            }
            Value::Array(a) => {
                out.push_str(&format!("{pad}-\n"));
                emit_seq(a, indent + 2, out);
            }
            other => out.push_str(&format!("{pad}- {}\n", scalar(other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_strings_that_yaml_1_1_would_retype() {
        let v = serde_json::json!({
            "mac": "52:54:00:12:34:56",
            "flag": "on",
            "n": 2,
            "b": false,
            "list": ["yes", 1],
            "maps": [{"to": "0.0.0.0/0", "via": "198.18.0.1"}, {"x": {"y": "z"}}],
            "cmds": [["systemctl", "start", "x"]],
            "empty": [],
            "on": "key that is a YAML 1.1 bool",
        });
        let y = to_string(&v).unwrap();
        assert_eq!(
            y,
            r#"mac: "52:54:00:12:34:56"
flag: "on"
"n": 2
b: false
list:
  - "yes"
  - 1
maps:
  - to: "0.0.0.0/0"
    via: "198.18.0.1"
  - x:
      "y": "z"
cmds:
  - ["systemctl","start","x"]
empty: []
"on": "key that is a YAML 1.1 bool"
"#
        );
    }
}
