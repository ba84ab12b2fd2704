//! The delegate plugins weft-cni needs beside it: `bridge`, `host-local`, `portmap` and
//! `loopback` ([`COMPANION_PLUGINS`](super::COMPANION_PLUGINS)), copied from a plugins dir (the
//! image's `/usr/lib/weft/cni`) into the host's CNI bin dir.
//!
//! An EKS node without aws-node has no `bridge` at all (the VPC CNI's init container copies
//! loopback, portmap, bandwidth and host-local only), so a flannel-type plugin that delegates to
//! bridge must bring it. Other plugins may already be there, put by the node image or another
//! CNI: a missing or older one is replaced, one that is as new or newer is kept (and the report
//! says so), and one whose version cannot be read is kept with a warning unless the operator
//! asks for `--replace-plugins`.
//!
//! A plugin's version is what it prints when run without `CNI_COMMAND` (the reference plugins'
//! `CNI bridge plugin v1.1.1`). Deciding is pure ([`plan_plugin`]); [`probe_version`] runs
//! the binary.

use std::cmp::Ordering;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Existing;

/// How long a plugin may take to print its version before it counts as unreadable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A plugin's version as it prints it (`v1.5.1`, `v1.1.1-eksbuild.1`), with its numeric part
/// for comparing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginVersion {
    /// The version as printed.
    pub text: String,
    numbers: Vec<u64>,
}

impl PluginVersion {
    /// Parses `v1.2.3` / `1.2.3` with an optional suffix after the numbers (`-rc1`,
    /// `+ds1`, `-eksbuild.1`); `None` when it does not start with a number.
    pub fn parse(text: &str) -> Option<PluginVersion> {
        let t = text.trim();
        let digits = t.strip_prefix('v').unwrap_or(t);
        let core: &str = digits
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .unwrap_or("");
        let numbers: Option<Vec<u64>> = core
            .split('.')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().ok())
            .collect();
        let numbers = numbers?;
        if numbers.is_empty() {
            return None;
        }
        Some(PluginVersion {
            text: t.to_string(),
            numbers,
        })
    }

    /// Compares the numeric parts (`1.10` is newer than `1.9`; missing parts count as 0).
    pub fn cmp_numbers(&self, other: &PluginVersion) -> Ordering {
        let n = self.numbers.len().max(other.numbers.len());
        (0..n)
            .map(|i| {
                let a = self.numbers.get(i).copied().unwrap_or(0);
                let b = other.numbers.get(i).copied().unwrap_or(0);
                a.cmp(&b)
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

impl fmt::Display for PluginVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The version in a plugin's "about" text: the line `CNI <name> plugin <version>` (the
/// reference plugins' `buildversion.BuildString`). `None` for `version unknown` or no such line.
pub fn parse_about(name: &str, text: &str) -> Option<PluginVersion> {
    let prefix = format!("CNI {name} plugin ");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .and_then(PluginVersion::parse)
}

/// What happens (or, in a dry run, would happen) to one delegate plugin in the bin dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginAction {
    /// Not there: copied.
    Create,
    /// The same bytes are there already.
    Unchanged,
    /// The same bytes with another mode: the mode is fixed.
    FixMode,
    /// An older one (or something that is not a regular file) is replaced.
    Upgrade {
        /// What it reported, if anything was there to ask.
        from: Option<String>,
    },
    /// One at least as new is there: kept.
    KeepNewer {
        /// Its version.
        theirs: String,
    },
    /// One whose version cannot be read is there: kept (a warning says how to replace it).
    KeepUnknown,
    /// Replaced because the operator asked for it (`--replace-plugins`).
    ForceReplace {
        /// What it reported, if anything.
        from: Option<String>,
    },
}

impl PluginAction {
    /// Whether the bin dir's file is (or would be) written.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            PluginAction::Create | PluginAction::Upgrade { .. } | PluginAction::ForceReplace { .. }
        )
    }

    /// The words for a report line; `ours` is the copied plugin's version.
    pub fn describe(&self, dry_run: bool, ours: Option<&str>) -> String {
        let ours = ours.unwrap_or("(no version)");
        let would = |done: &str, will: &str| {
            if dry_run {
                will.to_string()
            } else {
                done.to_string()
            }
        };
        match self {
            PluginAction::Create => format!("{} ({ours})", would("copied", "would copy")),
            PluginAction::Unchanged => format!("unchanged ({ours})"),
            PluginAction::FixMode => format!("{} ({ours})", would("mode fixed", "would fix mode")),
            PluginAction::Upgrade { from } => format!(
                "{} {} with {ours}",
                would("replaced", "would replace"),
                from.as_deref().unwrap_or("a file that is not a plugin")
            ),
            PluginAction::KeepNewer { theirs } => {
                format!("kept: its {theirs} is not older than weft's {ours}")
            }
            PluginAction::KeepUnknown => "kept: it prints no version to compare".to_string(),
            PluginAction::ForceReplace { from } => format!(
                "{} {} with {ours} (--replace-plugins)",
                would("replaced", "would replace"),
                from.as_deref().unwrap_or("a plugin of unknown version")
            ),
        }
    }
}

/// Decides what to do with one delegate plugin: `existing` is what the bin dir holds (compared
/// with our copy's bytes), `theirs` the version it reports, `ours` the version ours reports.
pub fn plan_plugin(
    existing: Existing,
    mode: u32,
    theirs: Option<&PluginVersion>,
    ours: Option<&PluginVersion>,
    force: bool,
) -> PluginAction {
    match existing {
        Existing::Missing => PluginAction::Create,
        Existing::Other => PluginAction::Upgrade { from: None },
        Existing::File {
            same_content: true,
            mode: have,
        } => {
            if have & 0o7777 == mode {
                PluginAction::Unchanged
            } else {
                PluginAction::FixMode
            }
        }
        Existing::File { .. } => {
            let from = theirs.map(|v| v.text.clone());
            if force {
                return PluginAction::ForceReplace { from };
            }
            match (theirs, ours) {
                (Some(t), Some(o)) if t.cmp_numbers(o) == Ordering::Less => {
                    PluginAction::Upgrade { from }
                }
                (Some(t), _) => PluginAction::KeepNewer {
                    theirs: t.text.clone(),
                },
                (None, _) => PluginAction::KeepUnknown,
            }
        }
    }
}

/// Runs `path` without `CNI_COMMAND` (empty environment, no stdin) and reads the version it
/// prints. `None` when it cannot run, prints no version or takes longer than
/// [`PROBE_TIMEOUT`] (it is then killed).
pub fn probe_version(path: &Path, name: &str) -> Option<PluginVersion> {
    let mut child = Command::new(path)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    // The about text is a few lines: it fits the pipes' buffers, so reading after the exit
    // cannot deadlock.
    let mut text = String::new();
    for pipe in [
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read>),
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut buf = Vec::new();
        let _ = pipe.take(64 * 1024).read_to_end(&mut buf);
        text.push_str(&String::from_utf8_lossy(&buf));
        text.push('\n');
    }
    parse_about(name, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> PluginVersion {
        PluginVersion::parse(s).unwrap()
    }

    #[test]
    fn versions_parse_and_compare_numerically() {
        assert_eq!(v("v1.1.1").numbers, vec![1, 1, 1]);
        assert_eq!(v("1.5.1-eksbuild.1").numbers, vec![1, 5, 1]);
        assert_eq!(v("v1.1.1+ds1").numbers, vec![1, 1, 1]);
        assert_eq!(v("v1.10.0").cmp_numbers(&v("v1.9.9")), Ordering::Greater);
        assert_eq!(v("v1.2").cmp_numbers(&v("v1.2.0")), Ordering::Equal);
        assert_eq!(v("v0.8.6").cmp_numbers(&v("v1.1.1")), Ordering::Less);
        for bad in ["", "version unknown", "v", "vx1", ".."] {
            assert!(PluginVersion::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(v("v1.x").numbers, vec![1], "the numbers before the suffix");
    }

    #[test]
    fn about_text_of_the_reference_plugins() {
        let about = "CNI bridge plugin v1.1.1\nCNI protocol versions supported: 0.1.0, 1.0.0\n";
        assert_eq!(parse_about("bridge", about).unwrap().text, "v1.1.1");
        assert!(
            parse_about("host-local", about).is_none(),
            "another plugin's line"
        );
        assert!(parse_about("bridge", "CNI bridge plugin version unknown\n").is_none());
        assert!(parse_about("bridge", "").is_none());
    }

    #[test]
    fn plan_covers_every_case() {
        let file = |same| Existing::File {
            same_content: same,
            mode: 0o755,
        };
        let ours = v("v1.1.1");
        let o = Some(&ours);
        assert_eq!(
            plan_plugin(Existing::Missing, 0o755, None, o, false),
            PluginAction::Create
        );
        assert_eq!(
            plan_plugin(file(true), 0o755, None, o, false),
            PluginAction::Unchanged
        );
        assert_eq!(
            plan_plugin(
                Existing::File {
                    same_content: true,
                    mode: 0o700
                },
                0o755,
                None,
                o,
                false
            ),
            PluginAction::FixMode
        );
        assert_eq!(
            plan_plugin(Existing::Other, 0o755, None, o, false),
            PluginAction::Upgrade { from: None }
        );
        let old = v("v0.8.6");
        assert_eq!(
            plan_plugin(file(false), 0o755, Some(&old), o, false),
            PluginAction::Upgrade {
                from: Some("v0.8.6".into())
            }
        );
        for theirs in ["v1.1.1", "v1.5.1"] {
            let t = v(theirs);
            assert_eq!(
                plan_plugin(file(false), 0o755, Some(&t), o, false),
                PluginAction::KeepNewer {
                    theirs: theirs.into()
                },
                "{theirs}"
            );
        }
        assert_eq!(
            plan_plugin(file(false), 0o755, None, o, false),
            PluginAction::KeepUnknown
        );
        // Our own version unknown: theirs is kept, we cannot say ours is newer.
        assert_eq!(
            plan_plugin(file(false), 0o755, Some(&old), None, false),
            PluginAction::KeepNewer {
                theirs: "v0.8.6".into()
            }
        );
        let newer = v("v9.0.0");
        assert_eq!(
            plan_plugin(file(false), 0o755, Some(&newer), o, true),
            PluginAction::ForceReplace {
                from: Some("v9.0.0".into())
            }
        );
        assert_eq!(
            plan_plugin(file(true), 0o755, None, o, true),
            PluginAction::Unchanged,
            "force does not rewrite identical bytes"
        );
    }

    #[test]
    fn report_words() {
        assert_eq!(
            PluginAction::Upgrade {
                from: Some("v0.8.6".into())
            }
            .describe(false, Some("v1.1.1")),
            "replaced v0.8.6 with v1.1.1"
        );
        assert_eq!(
            PluginAction::KeepNewer {
                theirs: "v1.5.1".into()
            }
            .describe(true, Some("v1.1.1")),
            "kept: its v1.5.1 is not older than weft's v1.1.1"
        );
        assert_eq!(
            PluginAction::Create.describe(true, Some("v1.1.1")),
            "would copy (v1.1.1)"
        );
    }
}
