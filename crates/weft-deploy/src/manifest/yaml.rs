//! A small, deterministic YAML writer for Kubernetes manifests.
//!
//! Values are a tree of [`Node`]s whose maps keep their insertion order (so `apiVersion`, `kind`
//! and `metadata` come first, as people write them). The writer emits block style with
//! two-space indentation and quotes every string a YAML 1.1 or 1.2 parser could read as
//! something else: kubectl (go-yaml) and PyYAML still follow YAML 1.1, where `yes`, `on`, `n`
//! and `1:20` are not strings. The same tree serializes to JSON for `--output json`.

use std::fmt::Write as _;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// One YAML/JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Str(String),
    Int(i64),
    Bool(bool),
    Map(Map),
    Seq(Vec<Node>),
}

/// A mapping that keeps its keys in insertion order, with optional comments above keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Map {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    key: String,
    value: Node,
    /// Comment lines written above the key (YAML only; JSON has no comments).
    comment: Vec<String>,
}

impl Map {
    pub fn new() -> Map {
        Map::default()
    }

    /// Appends `key: value`.
    pub fn with(mut self, key: &str, value: impl Into<Node>) -> Map {
        self.push(key, value);
        self
    }

    /// Appends `key: value` under a comment (one line per element).
    pub fn with_comment(mut self, comment: &[&str], key: &str, value: impl Into<Node>) -> Map {
        self.entries.push(Entry {
            key: key.to_string(),
            value: value.into(),
            comment: comment.iter().map(|l| l.to_string()).collect(),
        });
        self
    }

    /// Appends `key: value`.
    pub fn push(&mut self, key: &str, value: impl Into<Node>) {
        self.entries.push(Entry {
            key: key.to_string(),
            value: value.into(),
            comment: Vec::new(),
        });
    }
}

impl From<&str> for Node {
    fn from(s: &str) -> Node {
        Node::Str(s.to_string())
    }
}

impl From<String> for Node {
    fn from(s: String) -> Node {
        Node::Str(s)
    }
}

impl From<&String> for Node {
    fn from(s: &String) -> Node {
        Node::Str(s.clone())
    }
}

impl From<i64> for Node {
    fn from(n: i64) -> Node {
        Node::Int(n)
    }
}

impl From<u16> for Node {
    fn from(n: u16) -> Node {
        Node::Int(i64::from(n))
    }
}

impl From<bool> for Node {
    fn from(b: bool) -> Node {
        Node::Bool(b)
    }
}

impl From<Map> for Node {
    fn from(m: Map) -> Node {
        Node::Map(m)
    }
}

impl<T: Into<Node>> From<Vec<T>> for Node {
    fn from(items: Vec<T>) -> Node {
        Node::Seq(items.into_iter().map(Into::into).collect())
    }
}

/// A sequence of strings.
pub fn strs<S: AsRef<str>>(items: &[S]) -> Node {
    Node::Seq(items.iter().map(|s| Node::from(s.as_ref())).collect())
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Str(s) => ser.serialize_str(s),
            Node::Int(n) => ser.serialize_i64(*n),
            Node::Bool(b) => ser.serialize_bool(*b),
            Node::Map(m) => {
                let mut map = ser.serialize_map(Some(m.entries.len()))?;
                for e in &m.entries {
                    map.serialize_entry(&e.key, &e.value)?;
                }
                map.end()
            }
            Node::Seq(items) => {
                let mut seq = ser.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
        }
    }
}

/// One document of a multi-document stream, with comment lines above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub comment: Vec<String>,
    pub body: Map,
}

/// Renders a stream: the header comment, then each document after a `---` line.
pub fn stream(header: &[String], docs: &[Doc]) -> String {
    let mut out = String::new();
    for line in header {
        comment_line(&mut out, 0, line);
    }
    for doc in docs {
        out.push_str("---\n");
        for line in &doc.comment {
            comment_line(&mut out, 0, line);
        }
        write_map(&mut out, &doc.body, 0);
    }
    out
}

/// Renders one mapping as a YAML block (used by tests and by [`stream`]).
#[cfg(test)]
pub fn to_yaml(map: &Map) -> String {
    let mut out = String::new();
    write_map(&mut out, map, 0);
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn comment_line(out: &mut String, indent: usize, line: &str) {
    pad(out, indent);
    // A comment ends at the line break, so a line break inside one would start YAML content.
    let line = line.replace(['\n', '\r'], " ");
    if line.is_empty() {
        out.push_str("#\n");
    } else {
        let _ = writeln!(out, "# {line}");
    }
}

fn write_map(out: &mut String, map: &Map, indent: usize) {
    for e in &map.entries {
        for line in &e.comment {
            comment_line(out, indent, line);
        }
        pad(out, indent);
        write_entry(out, e, indent);
    }
}

/// Writes `key: value` from the key on (the caller wrote the indentation or the `- `).
/// `indent` is the column of the key; nested blocks go two columns deeper.
fn write_entry(out: &mut String, e: &Entry, indent: usize) {
    out.push_str(&scalar(&e.key));
    out.push(':');
    write_value(out, &e.value, indent + 2);
}

/// Writes a value that follows `key:` or `-`, nested content at `inner`.
fn write_value(out: &mut String, value: &Node, inner: usize) {
    match value {
        Node::Map(m) if !m.entries.is_empty() => {
            out.push('\n');
            write_map(out, m, inner);
        }
        Node::Seq(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, inner);
        }
        Node::Str(s) if block_literal_ok(s) => {
            out.push(' ');
            write_block_literal(out, s, inner);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, items: &[Node], indent: usize) {
    for item in items {
        match item {
            Node::Map(m) if !m.entries.is_empty() => {
                let (first, rest) = m.entries.split_first().expect("non-empty");
                for line in &first.comment {
                    comment_line(out, indent, line);
                }
                pad(out, indent);
                out.push_str("- ");
                write_entry(out, first, indent + 2);
                for e in rest {
                    for line in &e.comment {
                        comment_line(out, indent + 2, line);
                    }
                    pad(out, indent + 2);
                    write_entry(out, e, indent + 2);
                }
            }
            other => {
                pad(out, indent);
                out.push('-');
                write_value(out, other, indent + 2);
            }
        }
    }
}

/// A value written on one line: a scalar, or an empty map/sequence in flow style.
fn inline(value: &Node) -> String {
    match value {
        Node::Str(s) => scalar(s),
        Node::Int(n) => n.to_string(),
        Node::Bool(b) => b.to_string(),
        Node::Map(_) => "{}".to_string(),
        Node::Seq(_) => "[]".to_string(),
    }
}

/// Words that YAML 1.1 (go-yaml v2, PyYAML) or 1.2 read as booleans or null, compared
/// case-insensitively (which also covers the few mixed-case forms the specs list).
const RESERVED: &[&str] = &["true", "false", "yes", "no", "on", "off", "y", "n", "null"];

/// True when `s` can be written as a plain (unquoted) scalar and still read back as the same
/// string by any YAML 1.1 or 1.2 parser. Deliberately conservative: anything outside a small
/// safe alphabet, or anything that could start a number, timestamp or special float, is quoted.
pub fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/' | ' '))
    {
        return false;
    }
    if s.starts_with(' ') || s.ends_with(' ') {
        return false;
    }
    // Numbers, timestamps, version-like strings and .inf/.nan start with one of these.
    if first.is_ascii_digit() || first == '.' {
        return false;
    }
    // `-` starts a sequence entry, a document marker or a negative number; it is only safe
    // when the first character after the dashes is a letter (as in `--ip-masq`).
    if first == '-'
        && !s
            .trim_start_matches('-')
            .starts_with(|c: char| c.is_ascii_alphabetic())
    {
        return false;
    }
    !RESERVED.iter().any(|w| s.eq_ignore_ascii_case(w))
}

/// A string as a YAML scalar on one line: plain when safe, else double-quoted.
pub fn scalar(s: &str) -> String {
    if plain_ok(s) {
        s.to_string()
    } else {
        double_quoted(s)
    }
}

/// Characters a YAML double-quoted scalar must escape besides `"` and `\`: C0 and C1
/// controls, DEL, and the characters YAML 1.1 treats as line breaks or a byte-order mark.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// `s` in YAML double quotes with every special character escaped.
pub fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// True when a multi-line string can be written as a `|` block literal and read back
/// unchanged: printable text (no tabs or carriage returns), not starting with a space or an
/// empty line (which would need an explicit indentation indicator).
fn block_literal_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && s.chars()
            .all(|c| c == '\n' || !(needs_escape(c) || c == '\t'))
}

/// Writes `|` (with the chomping indicator that keeps the trailing line breaks exact) and the
/// lines at `indent`.
fn write_block_literal(out: &mut String, s: &str, indent: usize) {
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    out.push_str(match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    });
    out.push('\n');
    let extra_empty_lines = trailing.saturating_sub(1);
    for line in body
        .split('\n')
        .chain(std::iter::repeat_n("", extra_empty_lines))
    {
        if !line.is_empty() {
            pad(out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tricky_strings_are_quoted() {
        for s in [
            "",
            "true",
            "True",
            "FALSE",
            "yes",
            "No",
            "on",
            "OFF",
            "y",
            "N",
            "null",
            "Null",
            "~",
            "1.33",
            "100m",
            "50Mi",
            "8081",
            "0x1F",
            "1e3",
            ".inf",
            "-.inf",
            ".NaN",
            "1:20",
            "2001-12-14",
            "-",
            "---",
            "-1",
            "--",
            "a: b",
            "a #b",
            "#x",
            "key:",
            ":x",
            "@x",
            "`x",
            "!tag",
            "&anchor",
            "*alias",
            "|",
            ">",
            "%x",
            "{a}",
            "[a]",
            "a,b",
            "'q'",
            "\"q\"",
            " lead",
            "trail ",
            "=",
            "<<",
            "?",
            "x?y",
            "http://a:2379",
            "--etcd-endpoints=x",
            "$(NODE_IP)",
            "é",
        ] {
            assert!(!plain_ok(s), "{s:?} must be quoted");
            assert!(scalar(s).starts_with('"'), "{s:?} -> {}", scalar(s));
        }
        for s in [
            "kube-flannel",
            "app",
            "apps/v1",
            "kubernetes.io/os",
            "pod-security.kubernetes.io/enforce",
            "cni-conf.json",
            "--ip-masq",
            "-v",
            "/run/flannel",
            "system-node-critical",
            "NET_ADMIN",
            "RollingUpdate",
            "no way",
            "yesterday",
            "nully",
            "Exists",
        ] {
            assert!(plain_ok(s), "{s:?} can stay plain");
        }
    }

    #[test]
    fn double_quoting_escapes_what_yaml_would_misread() {
        assert_eq!(double_quoted(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(double_quoted("a\nb\tc\r"), r#""a\nb\tc\r""#);
        assert_eq!(
            double_quoted("\u{1}\u{7f}\u{85}\u{2028}\u{feff}"),
            r#""\u0001\u007F\N\L\uFEFF""#
        );
        assert_eq!(double_quoted("é✓"), "\"é✓\"");
    }

    #[test]
    fn blocks_sequences_and_comments_are_laid_out_like_kubectl_yaml() {
        let m = Map::new()
            .with("apiVersion", "v1")
            .with_comment(
                &["why", ""],
                "data",
                Map::new().with("a.json", "{\n  \"x\": 1\n}\n"),
            )
            .with(
                "list",
                vec![
                    Node::from(
                        Map::new()
                            .with("name", "a")
                            .with("args", strs(&["--x=1", "y"])),
                    ),
                    Node::from("plain"),
                    Node::from(vec![Node::from("nested")]),
                ],
            )
            .with("empty", Map::new())
            .with("none", Vec::<Node>::new())
            .with("n", 8081_u16)
            .with("b", false);
        let want = r#"apiVersion: v1
# why
#
data:
  a.json: |
    {
      "x": 1
    }
list:
  - name: a
    args:
      - "--x=1"
      - "y"
  - plain
  -
    - nested
empty: {}
none: []
"n": 8081
b: false
"#;
        assert_eq!(to_yaml(&m), want);
    }

    #[test]
    fn block_literal_chomping_keeps_trailing_newlines_exact() {
        let yaml = |s: &str| to_yaml(&Map::new().with("k", s));
        assert_eq!(yaml("a\nb"), "k: |-\n  a\n  b\n");
        assert_eq!(yaml("a\n\nb\n"), "k: |\n  a\n\n  b\n");
        assert_eq!(yaml("a\n\n\n"), "k: |+\n  a\n\n\n");
        // Not representable as a plain block literal: double quotes.
        assert_eq!(yaml(" a\nb"), "k: \" a\\nb\"\n");
        assert_eq!(yaml("\na"), "k: \"\\na\"\n");
        assert_eq!(yaml("a\tb\nc"), "k: \"a\\tb\\nc\"\n");
    }

    #[test]
    fn json_keeps_key_order() {
        let m = Map::new()
            .with("kind", "List")
            .with("apiVersion", "v1")
            .with("n", 1_i64);
        assert_eq!(
            serde_json::to_string(&Node::from(m)).unwrap(),
            r#"{"kind":"List","apiVersion":"v1","n":1}"#
        );
    }

    /// Round-trips tricky strings through PyYAML (a YAML 1.1 parser, like kubectl's go-yaml):
    /// what we write must read back as the same strings. PyYAML comes with
    /// kubernetes-validate, which the manifest tests need anyway.
    #[test]
    fn tricky_strings_round_trip_through_a_real_yaml_parser() {
        let tricky: Vec<String> = [
            "",
            "true",
            "yes",
            "No",
            "on",
            "y",
            "~",
            "null",
            "1.33",
            "100m",
            "0o17",
            "012",
            "1:20",
            "1_000",
            "2001-12-14t21:59:43.10-05:00",
            ".inf",
            "-",
            "---",
            "...",
            "a: b",
            "a #b",
            "#x",
            "@x",
            "!x",
            "&x",
            "*x",
            "|",
            ">",
            "%x",
            "{a: 1}",
            "[a]",
            "a,b",
            "'q'",
            "\"q\"",
            " lead",
            "trail ",
            "=",
            "<<",
            "?",
            "--ip-masq",
            "$(NODE_IP)",
            "back\\slash",
            "tab\there",
            "cr\rhere",
            "\u{85}nel",
            "ls\u{2028}x",
            "bom\u{feff}",
            "\u{1}ctl",
            "é✓",
            "multi\nline\n",
            "multi\nno-newline",
            "multi\n\n\n",
            "x\n  indented\n",
            " lead\nline",
            "\nfirst-empty",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut map = Map::new();
        for (i, s) in tricky.iter().enumerate() {
            map.push(&format!("k{i}"), s.as_str());
            // The same strings as keys and as sequence items.
            map.push(s, vec![Node::from(s.as_str())]);
        }
        let yaml = to_yaml(&map);
        let script = "import sys, json, yaml\n\
            json.dump(yaml.safe_load(sys.stdin.read()), sys.stdout)";
        let child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut child = child.unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); install Python 3 and `pip install kubernetes-validate` (brings PyYAML)")
        });
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(yaml.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "PyYAML could not read our YAML (missing? `pip install kubernetes-validate` brings it): {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
        let back: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for (i, s) in tricky.iter().enumerate() {
            assert_eq!(
                back[format!("k{i}")],
                serde_json::json!(s),
                "value {s:?} in\n{yaml}"
            );
            assert_eq!(
                back[s.as_str()],
                serde_json::json!([s]),
                "key/item {s:?} in\n{yaml}"
            );
        }
    }
}
