//! `weft leases list`: the keys under `<prefix>/subnets/` with TTLs and problem flags.

use anyhow::Result;
use serde_json::json;
use weft_core::config::NetworkConfig;

use crate::cli::{EtcdArgs, OutputFormat};
use crate::etcd::Etcd;
use crate::output::{self, Outcome};
use crate::report;

pub async fn list(etcd_args: &EtcdArgs, format: OutputFormat) -> Result<Outcome> {
    let etcd = Etcd::connect(etcd_args).await?;
    let key = etcd.config_key();
    let mut out = Outcome::default();
    let (cfg, config_error) = match etcd.get_config().await? {
        Some(raw) => match NetworkConfig::parse(&raw) {
            Ok(cfg) => (Some(cfg), None),
            Err(e) => (None, Some(format!("the config at {key} is invalid: {e}"))),
        },
        None => (
            None,
            Some(format!(
                "there is no network config at {key} (see `weft network check`)"
            )),
        ),
    };
    if let Some(e) = &config_error {
        out.note(format!(
            "{e}; OUTSIDE is not checked and the free subnets are unknown"
        ));
    }
    let rep = report::build(cfg.as_ref(), etcd.leases().await?);
    match format {
        OutputFormat::Json => {
            let doc = json!({
                "prefix": etcd.store.subnets_prefix(),
                "config_error": config_error,
                "leases": rep.rows,
                "summary": {
                    "leases": rep.rows.len(),
                    "reservations": rep.reservations,
                    "free": rep.free,
                    "total": rep.total,
                    "problems": rep.problem_count(),
                },
            });
            out.say(output::json(&doc));
        }
        OutputFormat::Text => out.stdout.push_str(&rep.render_text()),
    }
    Ok(out)
}
