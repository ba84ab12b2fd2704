//! `iptables-save` text, read once for every reader: weftd's rule sync (rules), the VPC CNI
//! cleanup (weft's cleanup), doctor and the firewall adapter (a table's section). Pure.
//!
//! A dump is `*<table>` sections of `:<chain> <policy> [p:b]` declarations and
//! `-A <chain> <spec>` rules, each ended by `COMMIT`; `#` lines are comments. Text without any
//! `*table` header is taken as the body of the table asked for (what `-save -t <table>`
//! prints is read the same as a whole dump). `iptables-save -c` puts `[packets:bytes] ` before
//! each rule; it is dropped.

/// One `-A` line of a saved table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    pub chain: String,
    /// Everything after `-A <chain> `, as saved (trimmed, without counters).
    pub spec: String,
    /// The `-j` / `-g` target, unquoted.
    pub target: Option<String>,
    /// The `--comment` value, unquoted.
    pub comment: Option<String>,
}

/// One table of `iptables-save` output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedTable {
    /// Chains declared with `:NAME`, in order.
    pub chains: Vec<String>,
    /// The rules, in saved order.
    pub rules: Vec<SavedRule>,
}

impl SavedTable {
    /// Parses the section of `table` in `text`. Comment lines and unknown lines are skipped.
    pub fn parse(table: &str, text: &str) -> SavedTable {
        let has_headers = text.lines().any(|l| l.trim_start().starts_with('*'));
        let mut inside = !has_headers;
        let mut out = SavedTable::default();
        for raw in text.lines() {
            let line = raw.trim();
            if let Some(name) = line.strip_prefix('*') {
                inside = name.trim() == table;
                continue;
            }
            if line == "COMMIT" {
                inside = !has_headers;
                continue;
            }
            if !inside || line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                if let Some(name) = decl.split_whitespace().next() {
                    out.chains.push(name.to_string());
                }
            } else if let Some(rest) = strip_counters(line).strip_prefix("-A ") {
                let rest = rest.trim_start();
                let (chain, spec) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                let words = split_words(spec);
                let after = |flags: &[&str]| {
                    words
                        .windows(2)
                        .find(|w| flags.contains(&w[0].as_str()))
                        .map(|w| w[1].clone())
                };
                out.rules.push(SavedRule {
                    chain: chain.to_string(),
                    spec: spec.trim().to_string(),
                    target: after(&["-j", "--jump", "-g", "--goto"]),
                    comment: after(&["--comment"]),
                });
            }
        }
        out
    }

    /// Whether `chain` is declared.
    pub fn is_declared(&self, chain: &str) -> bool {
        self.chains.iter().any(|name| name == chain)
    }

    /// The rules of `chain`, in order.
    pub fn rules_of<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a SavedRule> + 'a {
        self.rules.iter().filter(move |r| r.chain == chain)
    }
}

/// The `*<table>` … `COMMIT` section of a whole dump, as it stands (empty if absent).
pub fn table_section(saved: &str, table: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in saved.lines() {
        if let Some(name) = line.strip_prefix('*') {
            inside = name.trim() == table;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
            if line.trim() == "COMMIT" {
                inside = false;
            }
        }
    }
    out
}

/// Drops the `[packets:bytes] ` prefix `iptables-save -c` puts before each rule.
pub fn strip_counters(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix('[')
        && let Some((counters, after)) = rest.split_once(']')
        && counters
            .split(':')
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return after.trim_start();
    }
    line
}

/// Splits a saved rule spec into words the way iptables-restore does: double quotes group,
/// a backslash escapes the next character.
pub fn split_words(spec: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
-A FORWARD -j X
COMMIT
*nat
:POSTROUTING ACCEPT [0:0]
:FLANNEL-POSTRTG - [0:0]
[12:840] -A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment \"flanneld masq\" -j RETURN
-A  FLANNEL-POSTRTG  -g MASQ-X
COMMIT
";

    #[test]
    fn one_table_of_a_dump() {
        let nat = SavedTable::parse("nat", DUMP);
        assert_eq!(nat.chains, ["POSTROUTING", "FLANNEL-POSTRTG"]);
        assert_eq!(nat.rules.len(), 3);
        let jump = &nat.rules[0];
        assert_eq!(jump.chain, "POSTROUTING");
        assert_eq!(
            jump.spec,
            "-m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG"
        );
        assert_eq!(jump.target.as_deref(), Some("FLANNEL-POSTRTG"));
        assert_eq!(jump.comment.as_deref(), Some("flanneld masq"));
        assert_eq!(nat.rules[2].chain, "FLANNEL-POSTRTG");
        assert_eq!(nat.rules[2].target.as_deref(), Some("MASQ-X"));
        assert_eq!(nat.rules_of("FLANNEL-POSTRTG").count(), 2);
        assert!(nat.is_declared("FLANNEL-POSTRTG") && !nat.is_declared("FORWARD"));
        let filter = SavedTable::parse("filter", DUMP);
        assert_eq!(filter.rules.len(), 1);
        assert_eq!(SavedTable::parse("mangle", DUMP), SavedTable::default());
    }

    #[test]
    fn a_body_without_headers_is_the_table_asked_for() {
        let t = SavedTable::parse("nat", ":A - [0:0]\n-A A -j RETURN\n");
        assert_eq!(t.chains, ["A"]);
        assert_eq!(t.rules[0].target.as_deref(), Some("RETURN"));
    }

    #[test]
    fn sections_and_counters() {
        assert!(table_section(DUMP, "nat").starts_with("*nat\n"));
        assert!(table_section(DUMP, "nat").ends_with("COMMIT\n"));
        assert!(table_section(DUMP, "filter").contains("-A FORWARD -j X"));
        assert_eq!(table_section(DUMP, "mangle"), "");
        assert_eq!(strip_counters("[1:2] -A X"), "-A X");
        assert_eq!(strip_counters("[x] -A X"), "[x] -A X");
    }

    #[test]
    fn words_unquote_and_unescape() {
        assert_eq!(
            split_words(r#"-m comment --comment "AWS, primary ENI"  -j X"#),
            ["-m", "comment", "--comment", "AWS, primary ENI", "-j", "X"]
        );
        assert_eq!(
            split_words(r#"--comment "a \"b\"" x\ y"#),
            ["--comment", "a \"b\"", "x y"]
        );
    }
}
