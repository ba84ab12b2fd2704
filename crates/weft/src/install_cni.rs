//! `weft install-cni`: weft-cni's installer, its report as text or (`-o json`) one document.

use anyhow::Result;
use serde_json::{Value, json};
use weft_cni::install::plugins::PluginAction;
use weft_cni::install::{FileAction, FileChange, InstallOptions, InstallReport};

use crate::cli::OutputFormat;
use crate::output::Outcome;

pub fn run(opts: &InstallOptions, format: OutputFormat) -> Result<Outcome> {
    let report = weft_cni::install::install(opts)?;
    let mut out = Outcome::default();
    match format {
        OutputFormat::Text => out.stdout = report.to_string(),
        OutputFormat::Json => out.say(crate::output::json(&to_json(&report))),
    }
    Ok(out)
}

fn file_action(a: FileAction) -> &'static str {
    match a {
        FileAction::Create => "create",
        FileAction::Replace => "replace",
        FileAction::FixMode => "fix_mode",
        FileAction::Unchanged => "unchanged",
    }
}

fn file(change: &FileChange, dry_run: bool) -> Value {
    json!({
        "path": change.path,
        "action": file_action(change.action),
        "mode": format!("{:04o}", change.mode),
        "description": change.action.describe(dry_run, change.mode),
    })
}

/// The report as data: every path with a machine-readable action and the report's words.
pub fn to_json(r: &InstallReport) -> Value {
    let delegates: Vec<Value> = r
        .delegates
        .iter()
        .map(|d| {
            let (action, installed) = match &d.action {
                PluginAction::Create => ("create", None),
                PluginAction::Unchanged => ("unchanged", None),
                PluginAction::FixMode => ("fix_mode", None),
                PluginAction::Upgrade { from } => ("upgrade", from.clone()),
                PluginAction::KeepNewer { theirs } => ("keep_newer", Some(theirs.clone())),
                PluginAction::KeepUnknown => ("keep_unknown", None),
                PluginAction::ForceReplace { from } => ("force_replace", from.clone()),
            };
            json!({
                "path": d.path,
                "action": action,
                "ours": d.ours,
                "installed": installed,
                "description": d.action.describe(r.dry_run, d.ours.as_deref()),
            })
        })
        .collect();
    json!({
        "dry_run": r.dry_run,
        "changed": r.changed(),
        "created_dirs": r.created_dirs,
        "delegates": delegates,
        "plugin": file(&r.plugin, r.dry_run),
        "conflist": file(&r.conflist, r.dry_run),
        "warnings": r.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
    })
}
