//! Carrying out a plan: every step is attempted (a failure does not stop the others, so one
//! stuck item never leaves the rest behind), except that a `chained` step stops at its first
//! failed action. Everything already gone counts as done, so a plan can be applied twice.

use std::fs;
use std::io;

use serde::Serialize;

use super::plan::{Action, Plan};
use super::snapshot::Host;

/// What happened to one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionResult {
    Done,
    Failed(String),
    /// Not run: an earlier action of its chained step failed.
    Skipped,
}

/// What happened to one step's actions, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepResult {
    pub actions: Vec<ActionResult>,
}

impl StepResult {
    pub fn ok(&self) -> bool {
        self.actions.iter().all(|a| *a == ActionResult::Done)
    }
}

/// Applies every step of `plan`; one result per step.
pub fn apply(plan: &Plan, host: &mut dyn Host) -> Vec<StepResult> {
    plan.steps
        .iter()
        .map(|step| {
            let mut failed = false;
            let actions = step
                .actions
                .iter()
                .map(|a| {
                    if failed && step.chained {
                        return ActionResult::Skipped;
                    }
                    match apply_action(a, host) {
                        Ok(()) => ActionResult::Done,
                        Err(e) => {
                            failed = true;
                            ActionResult::Failed(e)
                        }
                    }
                })
                .collect();
            StepResult { actions }
        })
        .collect()
}

fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Carries out one action; the error names the object and what to check.
pub fn apply_action(action: &Action, host: &mut dyn Host) -> Result<(), String> {
    match action {
        Action::Rename { from, to } => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(format!(
                    "cannot move {} to {}: the target exists (created since the plan was made); move it away and run again",
                    from.display(),
                    to.display()
                ));
            }
            match fs::rename(from, to) {
                Ok(()) => Ok(()),
                Err(e) if gone(&e) && fs::symlink_metadata(from).is_err() => Ok(()),
                Err(e) => Err(format!(
                    "failed to move {} to {}: {e}; check that the directory is writable (run as root)",
                    from.display(),
                    to.display()
                )),
            }
        }
        Action::Remove { path, recursive } => {
            let r = if *recursive {
                fs::remove_dir_all(path)
            } else {
                fs::remove_file(path)
            };
            match r {
                Ok(()) => Ok(()),
                Err(e) if gone(&e) => Ok(()),
                Err(e) => Err(format!(
                    "failed to remove {}: {e}; check that it is not a mount point and that you are root",
                    path.display()
                )),
            }
        }
        Action::Run {
            program,
            args,
            stdin,
        } => {
            let shown = action
                .command()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            match host.run(program, args, stdin.as_deref()) {
                Ok(out) if out.success => Ok(()),
                Ok(out) => Err(format!(
                    "`{shown}` failed ({}): {}; run the command again to see what is left",
                    out.status,
                    out.stderr.trim()
                )),
                Err(e) => Err(format!(
                    "cannot run `{shown}`: {e}; is {program} installed (or pass its path)?"
                )),
            }
        }
    }
}
