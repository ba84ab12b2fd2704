//! The report: a table (CHECK, STATUS, DETAIL, with the CAUSE and FIX of every row that is
//! not OK on the lines below it, so commands stay whole for copying) or one JSON document.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::checks::{Finding, Status};

fn count(findings: &[Finding], s: Status) -> usize {
    findings.iter().filter(|f| f.status == s).count()
}

/// `4 OK, 1 WARN, 2 FAIL, 1 SKIP`.
fn summary(findings: &[Finding]) -> String {
    [Status::Ok, Status::Warn, Status::Fail, Status::Skip]
        .iter()
        .map(|s| format!("{} {}", count(findings, *s), s.label()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Columns of prose per line (after the CHECK and STATUS columns).
const WIDTH: usize = 100;

/// Breaks one line of prose at spaces into lines of at most `width` columns (longer words
/// stay whole), never inside a `backticked` command, so commands can be copied in one piece.
pub fn wrap(line: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_code = false;
    let mut glued = String::new();
    // Words joined while inside backticks form one unbreakable piece.
    let mut pieces = Vec::new();
    for word in line.split(' ') {
        if !glued.is_empty() {
            glued.push(' ');
        }
        glued.push_str(word);
        if word.matches('`').count() % 2 == 1 {
            in_code = !in_code;
        }
        if !in_code {
            pieces.push(std::mem::take(&mut glued));
        }
    }
    if !glued.is_empty() {
        pieces.push(glued);
    }
    for piece in pieces {
        let fits = cur.chars().count() + 1 + piece.chars().count() <= width;
        if cur.is_empty() {
            cur = piece;
        } else if fits {
            cur.push(' ');
            cur.push_str(&piece);
        } else {
            out.push(std::mem::replace(&mut cur, piece));
        }
    }
    out.push(cur);
    out
}

/// Writes a field: its first line wrapped, further lines (command payloads) verbatim.
fn field(out: &mut String, label: &str, text: &str, pad: usize) {
    let mut first = true;
    let mut emit = |out: &mut String, line: &str| {
        let head = if first { label } else { "" };
        first = false;
        let _ = writeln!(out, "{:pad$}{head:<7}{line}", "");
    };
    let mut lines = text.lines();
    if let Some(l) = lines.next() {
        for w in wrap(l, WIDTH) {
            emit(out, &w);
        }
    }
    for l in lines {
        emit(out, l);
    }
}

/// The text table.
pub fn text(findings: &[Finding]) -> String {
    let w = findings
        .iter()
        .map(|f| f.check.len())
        .chain(["CHECK".len()])
        .max()
        .unwrap_or(5);
    let status_w = "STATUS".len();
    let pad = w + 2 + status_w + 2;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<w$}  {:<status_w$}  DETAIL / CAUSE / FIX",
        "CHECK", "STATUS"
    );
    for f in findings {
        let detail: Vec<String> = f.detail.lines().flat_map(|l| wrap(l, WIDTH + 7)).collect();
        let first = detail.first().map_or("", String::as_str);
        let _ = writeln!(
            out,
            "{:<w$}  {:<status_w$}  {first}",
            f.check,
            f.status.label()
        );
        for l in detail.iter().skip(1) {
            let _ = writeln!(out, "{:pad$}{l}", "");
        }
        if !f.cause.is_empty() {
            field(&mut out, "cause: ", &f.cause, pad);
        }
        if !f.fix.is_empty() {
            field(&mut out, "fix:   ", &f.fix, pad);
        }
    }
    let verdict = if findings.iter().any(|f| f.status == Status::Fail) {
        "FAIL"
    } else if findings.iter().any(|f| f.status == Status::Warn) {
        "WARN"
    } else {
        "OK"
    };
    let _ = writeln!(out, "\n{verdict}: {}", summary(findings));
    out
}

/// The JSON document of `--output json`.
pub fn json(findings: &[Finding]) -> Value {
    json!({
        "ok": !findings.iter().any(|f| f.status == Status::Fail),
        "summary": {
            "ok": count(findings, Status::Ok),
            "warn": count(findings, Status::Warn),
            "fail": count(findings, Status::Fail),
            "skip": count(findings, Status::Skip),
        },
        "checks": findings,
    })
}
