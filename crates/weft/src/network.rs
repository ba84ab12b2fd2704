//! `weft network init|show|check|migrate-v2`: the etcd calls around the pure `netconf`,
//! `report` and `v2` modules, plus the texts that explain the etcd v2/v3 split.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use weft_core::config::NetworkConfig;
use weft_core::subnet::subnets_key_prefix;

use crate::cli::{EtcdArgs, InitArgs, OutputFormat, WriteArgs};
use crate::etcd::Etcd;
pub use crate::netconf::weftd_refusals;
use crate::netconf::{self, Candidate, Decision, Effective, InitSpec};
use crate::output::{self, Outcome};
use crate::report;
use crate::v2::{self, Probe, V2Get};

const EXAMPLE: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

/// Notes printed when writing a config.
fn write_notes(out: &mut Outcome, cfg: &NetworkConfig) {
    for r in weftd_refusals(cfg) {
        out.note(format!("warning: {r}"));
    }
    for n in netconf::backend_notes(cfg) {
        out.note(n);
    }
    if cfg.backend_defaulted {
        out.note("warning: the config names no Backend.Type: weftd uses vxlan but flanneld would use udp; add \"Backend\": {\"Type\": \"vxlan\"} so both agree");
    }
}

fn auth(etcd: &EtcdArgs) -> Option<(&str, &str)> {
    etcd.etcd_username
        .as_deref()
        .map(|u| (u, etcd.etcd_password.as_deref().unwrap_or("")))
}

/// Where the new config comes from, validated before etcd is contacted.
fn init_candidate(args: &InitArgs) -> Result<Candidate> {
    if let Some(raw) = &args.json {
        return netconf::parse_raw(raw.as_bytes(), "--json").map_err(anyhow::Error::msg);
    }
    if let Some(path) = &args.from_file {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read --from-file {}", path.display()))?;
        return netconf::parse_raw(&bytes, &format!("--from-file {}", path.display()))
            .map_err(anyhow::Error::msg);
    }
    let Some(network) = &args.network else {
        bail!(
            "pass --network <CIDR> (e.g. --network 10.244.0.0/16), --json '<config>' or --from-file <path>"
        );
    };
    let spec = InitSpec {
        network: network.clone(),
        subnet_len: args.subnet_len,
        subnet_min: args.subnet_min,
        subnet_max: args.subnet_max,
        backend: args.backend.clone(),
        vni: args.vni,
        port: args.port,
        mtu: args.mtu,
        direct_routing: args.direct_routing,
        nftables: args.nftables,
    };
    netconf::build_config(&spec).map_err(anyhow::Error::msg)
}

pub async fn init(args: &InitArgs) -> Result<Outcome> {
    let candidate = init_candidate(args)?;
    let etcd = Etcd::connect(&args.etcd).await?;
    let stored = etcd.get_config().await?;
    write(&etcd, stored.as_deref(), &candidate, args.write, "").await
}

/// The shared tail of `init` and `migrate-v2`: decide, print, write.
async fn write(
    etcd: &Etcd,
    stored: Option<&[u8]>,
    candidate: &Candidate,
    w: WriteArgs,
    after: &str,
) -> Result<Outcome> {
    let key = etcd.config_key();
    let mut out = Outcome::default();
    let summary = Effective::of(&candidate.config).summary();
    let decision = netconf::decide(stored, candidate, w.force);
    match &decision {
        Decision::Unchanged { identical: true } => {
            out.say(format!(
                "{key} already holds this config; nothing to do\n  {}\n  {summary}",
                candidate.raw
            ));
            return Ok(out);
        }
        Decision::Unchanged { identical: false } => {
            out.say(format!(
                "{key} already holds an equivalent config (same effective values, other bytes); nothing to do\n  stored: {}\n  {summary}",
                String::from_utf8_lossy(stored.unwrap_or_default()).trim()
            ));
            return Ok(out);
        }
        Decision::Refuse { diff } => {
            let fit = fit_note(etcd, &candidate.config).await;
            bail!(
                "{key} already holds a different config; nothing was written:\n{}\n{fit}re-run with --force to replace it (weftd and flanneld read the config at start: restart them afterwards)",
                diff.join("\n")
            );
        }
        Decision::Overwrite { diff } => {
            out.say(format!(
                "{key} holds a different config; replacing it (--force):\n{}",
                diff.join("\n")
            ));
            let fit = fit_note(etcd, &candidate.config).await;
            if !fit.is_empty() {
                out.note(fit.trim_end());
            }
        }
        Decision::Create => {}
    }
    write_notes(&mut out, &candidate.config);
    if w.dry_run {
        out.say(format!(
            "dry run: would write {key} (etcd v3 at {}):\n  {}\n  {summary}",
            etcd.endpoints(),
            candidate.raw
        ));
        return Ok(out);
    }
    out.say(format!(
        "writing {key} (etcd v3 at {}):\n  {}\n  {summary}",
        etcd.endpoints(),
        candidate.raw
    ));
    etcd.write_config(stored, &candidate.raw).await?;
    out.say(format!("done{after}"));
    if matches!(decision, Decision::Overwrite { .. }) {
        out.say(
            "weftd and flanneld read the config at start: restart them on every node to use it",
        );
    }
    Ok(out)
}

/// How many existing leases would not fit `cfg`, as a line ending in a newline (or "").
async fn fit_note(etcd: &Etcd, cfg: &NetworkConfig) -> String {
    let Ok((raw, _)) = etcd.store.list_leases().await else {
        return String::new();
    };
    let total = raw.len();
    let misfit = raw
        .iter()
        .filter(|l| l.subnet.as_ref().is_ok_and(|s| !cfg.contains_subnet(*s)))
        .count();
    if misfit == 0 {
        return String::new();
    }
    format!(
        "{misfit} of the {total} leases under {} do not fit the new config; each node drops its lease and takes a new subnet when weftd restarts, so pod addresses change\n",
        subnets_key_prefix(&etcd.cfg.prefix)
    )
}

pub async fn show(etcd_args: &EtcdArgs, format: OutputFormat) -> Result<Outcome> {
    let etcd = Etcd::connect(etcd_args).await?;
    let key = etcd.config_key();
    let Some(raw) = etcd.get_config().await? else {
        bail!(
            "no network config at {key} in etcd v3 ({}); write one with `weft network init --network 10.244.0.0/16`, or run `weft network check` to look for a config left in the etcd v2 store",
            etcd.endpoints()
        );
    };
    let raw_text = String::from_utf8_lossy(&raw).into_owned();
    let parsed = NetworkConfig::parse(&raw);
    let mut out = Outcome::default();
    match format {
        OutputFormat::Json => {
            let mut doc = json!({
                "key": key,
                "raw": raw_text,
                "valid": parsed.is_ok(),
            });
            match &parsed {
                Ok(cfg) => {
                    doc["effective"] =
                        serde_json::to_value(Effective::of(cfg)).unwrap_or(Value::Null);
                    doc["weftd_refusals"] = json!(weftd_refusals(cfg));
                }
                Err(e) => doc["error"] = json!(e.to_string()),
            }
            out.say(output::json(&doc));
        }
        OutputFormat::Text => {
            out.say(format!("{key}:\n  {}", raw_text.trim()));
            match &parsed {
                Ok(cfg) => {
                    out.say("effective values (defaults filled in):");
                    for (name, value) in Effective::of(cfg).lines() {
                        out.say(format!("  {name:<10} {value}"));
                    }
                    for r in weftd_refusals(cfg) {
                        out.say(format!("warning: {r}"));
                    }
                }
                Err(e) => out.say(format!("invalid: {e}")),
            }
        }
    }
    if let Err(e) = parsed {
        out.failed = true;
        if format == OutputFormat::Json {
            out.note(format!("the config at {key} is invalid: {e}"));
        }
    }
    Ok(out)
}

/// Explains a config missing from v3, given what the v2 store said.
pub fn explain_missing(key: &str, endpoints: &str, probes: &[Probe]) -> String {
    let mut s = format!("{key} does not exist in the etcd v3 store ({endpoints})");
    let write_hint = format!(
        "write it to v3 with:\n    weft network init --network 10.244.0.0/16\nor:\n    ETCDCTL_API=3 etcdctl --endpoints {endpoints} put {key} '{EXAMPLE}'\n(if weftd/flanneld use another --etcd-prefix, pass the same one here)"
    );
    if let Some((ep, V2Get::Value { value, .. })) = v2::answer(probes) {
        s.push_str(&format!(
            ", but the etcd v2 store at {ep} holds it:\n    {}\n",
            value.trim()
        ));
        s.push_str(
            "why: etcd keeps two separate keyspaces. Keys written through the v2 API (ETCDCTL_API=2 etcdctl set,\n\
             \x20 or flannel before 0.18) are invisible to v3 clients, and the other way round.\n\
             \x20 - flannel 0.18+ and weftd read v3 only, so they see no config (\"flannel config not found in etcd\n\
             \x20   store. Did you create your config using etcdv3 API?\": the v3 side of error E2).\n\
             \x20 - a v2-era flannel reading a config written with the v3 API fails with \"100: Key not found\" (E2),\n\
             \x20   and against an etcd without --enable-v2 with \"client: response is invalid json\" (E3).\n\
             \x20 - the v2 API only exists while etcd runs with --enable-v2; etcd 3.6 removes it.\n",
        );
        if let Err(e) = NetworkConfig::parse(value.as_bytes()) {
            s.push_str(&format!(
                "note: the v2 value is not a valid config either ({e}); write a fixed one with `weft network init --json '<config>'`\n"
            ));
        }
        s.push_str("fix: copy it to v3 with `weft network migrate-v2` (preview with --dry-run), then restart weftd/flanneld");
        return s;
    }
    let either = if matches!(v2::answer(probes), Some((_, V2Get::NotFound))) {
        " either"
    } else {
        ""
    };
    s.push_str(&format!(", and {}{either}.\n", v2_state(key, probes)));
    s.push_str("weftd and flannel 0.18+ read the config from the v3 store; ");
    s.push_str(&write_hint);
    s
}

/// One phrase about the v2 store, for the "not in v3" message.
fn v2_state(key: &str, probes: &[Probe]) -> String {
    if let Some((ep, get)) = v2::answer(probes) {
        return match get {
            V2Get::NotFound => format!("not in the etcd v2 store at {ep}"),
            V2Get::Disabled => format!(
                "the etcd at {ep} serves no v2 API (it runs without --enable-v2), so no v2 data was checked; if this cluster once ran flannel before 0.18, restart etcd with --enable-v2 and run `weft network check` again to find the old config"
            ),
            V2Get::Dir { .. } => {
                format!("the etcd v2 store at {ep} has a directory at {key}, not a config value")
            }
            V2Get::Error { code, message } => {
                format!("the etcd v2 store at {ep} answered error {code}: {message}")
            }
            V2Get::Value { .. } => format!("the etcd v2 store at {ep} holds it"),
        };
    }
    let skipped: Vec<&str> = probes
        .iter()
        .filter_map(|p| match p {
            Probe::SkippedHttps { endpoint } => Some(endpoint.as_str()),
            _ => None,
        })
        .collect();
    let failed: Vec<String> = probes
        .iter()
        .filter_map(|p| match p {
            Probe::Failed { endpoint, error } => Some(format!("{endpoint}: {error}")),
            _ => None,
        })
        .collect();
    let mut parts = Vec::new();
    if !skipped.is_empty() {
        parts.push(format!(
            "the etcd v2 store was not checked at {} (weft's v2 probe speaks plain HTTP only; check by hand with ETCDCTL_API=2 etcdctl --ca-file ... get {key})",
            skipped.join(",")
        ));
    }
    if !failed.is_empty() {
        parts.push(format!(
            "the etcd v2 store could not be read ({})",
            failed.join("; ")
        ));
    }
    if parts.is_empty() {
        "the etcd v2 store was not checked".into()
    } else {
        parts.join("; ")
    }
}

pub async fn check(etcd_args: &EtcdArgs, format: OutputFormat) -> Result<Outcome> {
    let etcd = Etcd::connect(etcd_args).await?;
    let key = etcd.config_key();
    let stored = etcd.get_config().await?;
    let mut problems: Vec<String> = Vec::new();
    let mut doc = json!({ "config_key": key, "endpoints": etcd.cfg.endpoints });
    let mut text = Vec::new();

    let cfg = match &stored {
        Some(raw) => {
            doc["config"] = json!({ "found": true, "raw": String::from_utf8_lossy(raw) });
            match NetworkConfig::parse(raw) {
                Ok(cfg) => {
                    let e = Effective::of(&cfg);
                    text.push(format!("config {key}: ok\n  {}", e.summary()));
                    doc["config"]["valid"] = json!(true);
                    doc["config"]["effective"] = serde_json::to_value(&e).unwrap_or(Value::Null);
                    for r in weftd_refusals(&cfg) {
                        problems.push(format!("config {key}: {r}"));
                    }
                    Some(cfg)
                }
                Err(e) => {
                    text.push(format!("config {key}: invalid"));
                    doc["config"]["valid"] = json!(false);
                    doc["config"]["error"] = json!(e.to_string());
                    problems.push(format!(
                        "config {key} is invalid: {e}; fix it with `weft network init --force ...`"
                    ));
                    None
                }
            }
        }
        None => {
            let endpoints = etcd.cfg.endpoints.clone();
            let config_key = key.clone();
            let auth = auth(etcd_args).map(|(u, p)| (u.to_string(), p.to_string()));
            let probes = tokio::task::spawn_blocking(move || {
                let auth = auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
                v2::probe(&endpoints, &config_key, auth)
            })
            .await
            .context("the etcd v2 probe stopped unexpectedly")?;
            let v2_value = match v2::answer(&probes) {
                Some((_, V2Get::Value { value, .. })) => Some(value.clone()),
                _ => None,
            };
            text.push(format!(
                "config {key}: missing from etcd v3{}",
                if v2_value.is_some() {
                    " (found in etcd v2 only)"
                } else {
                    ""
                }
            ));
            doc["config"] = json!({
                "found": false,
                "v2_value": v2_value,
                "v2": v2_state(&key, &probes),
            });
            problems.push(explain_missing(&key, &etcd.endpoints(), &probes));
            None
        }
    };

    let leases = etcd.leases().await?;
    let rep = report::build(cfg.as_ref(), leases);
    text.push(format!(
        "leases {}: {}",
        subnets_key_prefix(&etcd.cfg.prefix),
        rep.summary()
    ));
    problems.extend(
        rep.problem_lines()
            .into_iter()
            .map(|p| format!("lease {p}")),
    );

    let mut out = Outcome {
        failed: !problems.is_empty(),
        ..Outcome::default()
    };
    match format {
        OutputFormat::Json => {
            doc["leases"] = serde_json::to_value(&rep).unwrap_or(Value::Null);
            doc["problems"] = json!(problems);
            doc["ok"] = json!(problems.is_empty());
            out.say(output::json(&doc));
        }
        OutputFormat::Text => {
            for t in text {
                out.say(t);
            }
            if problems.is_empty() {
                out.say("check passed");
            } else {
                out.say(format!(
                    "\n{} problem{}:",
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" }
                ));
                for p in &problems {
                    out.say(format!("- {}", p.replace('\n', "\n  ")));
                }
                out.say("check failed");
            }
        }
    }
    Ok(out)
}

pub async fn migrate_v2(etcd_args: &EtcdArgs, w: WriteArgs) -> Result<Outcome> {
    let etcd = Etcd::connect(etcd_args).await?;
    let key = etcd.config_key();
    let subnets = subnets_key_prefix(&etcd.cfg.prefix);
    let endpoints = etcd.cfg.endpoints.clone();
    let auth = auth(etcd_args).map(|(u, p)| (u.to_string(), p.to_string()));
    let (key2, subnets2) = (key.clone(), subnets.trim_end_matches('/').to_string());
    let (probes, lease_probes) = tokio::task::spawn_blocking(move || {
        let auth = auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        (
            v2::probe(&endpoints, &key2, auth),
            v2::probe(&endpoints, &subnets2, auth),
        )
    })
    .await
    .context("the etcd v2 probe stopped unexpectedly")?;

    let (ep, value) = match v2::answer(&probes) {
        Some((ep, V2Get::Value { value, .. })) => (ep.to_string(), value.clone()),
        _ => bail!(
            "nothing to migrate for {key}: {}; if the config is already in v3, `weft network show` prints it",
            v2_state(&key, &probes)
        ),
    };
    let candidate = netconf::parse_raw(value.as_bytes(), &format!("the v2 value of {key} at {ep}"))
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}; write a corrected config to v3 with `weft network init --json '<config>'`"
            )
        })?;
    let stored = etcd.get_config().await?;
    let leases_note = match v2::answer(&lease_probes) {
        Some((_, V2Get::Dir { children })) if !children.is_empty() => format!(
            "{} subnet lease{} under {subnets} in the v2 store {} not copied: v2 leases carry v2 TTLs and expire; weftd (or flanneld 0.18+) takes a fresh lease in v3 when it starts on each node",
            children.len(),
            if children.len() == 1 { "" } else { "s" },
            if children.len() == 1 { "is" } else { "are" }
        ),
        _ => format!(
            "subnet leases under {subnets} are never copied from v2: they expire; weftd (or flanneld 0.18+) takes a fresh lease in v3 when it starts on each node"
        ),
    };
    let mut out = Outcome::default();
    out.say(format!("v2 store at {ep}: {key} = {}", candidate.raw));
    let after = format!(
        ": copied {key} from the v2 store to v3\n{leases_note}\nthe v2 copy is left in place; once every node runs a v3 reader, etcd can run without --enable-v2"
    );
    let tail = write(&etcd, stored.as_deref(), &candidate, w, &after).await?;
    out.stdout.push_str(&tail.stdout);
    out.stderr.push_str(&tail.stderr);
    if w.dry_run {
        out.say(leases_note);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "/coreos.com/network/config";
    const EP: &str = "http://10.0.0.5:2379";

    fn answer(get: V2Get) -> Vec<Probe> {
        vec![Probe::Answer {
            endpoint: EP.into(),
            get,
        }]
    }

    #[test]
    fn v2_only_config_explains_the_split_and_the_fix() {
        let msg = explain_missing(
            KEY,
            EP,
            &answer(V2Get::Value {
                value: EXAMPLE.into(),
                modified_index: 4,
            }),
        );
        for needle in [
            "does not exist in the etcd v3 store",
            "v2 store at http://10.0.0.5:2379 holds it",
            EXAMPLE,
            "invisible to v3",
            "flannel 0.18+ and weftd read v3 only",
            "E2",
            "E3",
            "--enable-v2",
            "weft network migrate-v2",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from:\n{msg}");
        }
        assert!(!msg.contains("not a valid config"));
        let msg = explain_missing(
            KEY,
            EP,
            &answer(V2Get::Value {
                value: "{\"Network\":\"nope\"}".into(),
                modified_index: 4,
            }),
        );
        assert!(msg.contains("not a valid config either"), "{msg}");
    }

    #[test]
    fn missing_everywhere_says_how_to_write_it() {
        for (probes, needle) in [
            (answer(V2Get::NotFound), "not in the etcd v2 store"),
            (answer(V2Get::Disabled), "without --enable-v2"),
            (
                vec![Probe::SkippedHttps {
                    endpoint: "https://e:2379".into(),
                }],
                "plain HTTP only",
            ),
            (
                vec![Probe::Failed {
                    endpoint: EP.into(),
                    error: "connection refused".into(),
                }],
                "connection refused",
            ),
        ] {
            let msg = explain_missing(KEY, EP, &probes);
            assert!(msg.contains(needle), "{needle}: {msg}");
            assert!(
                msg.contains("weft network init --network 10.244.0.0/16"),
                "{msg}"
            );
            assert!(
                msg.contains(&format!(
                    "ETCDCTL_API=3 etcdctl --endpoints {EP} put {KEY} '{EXAMPLE}'"
                )),
                "{msg}"
            );
        }
    }

    #[test]
    fn weftd_refusals_match_weftd() {
        let ok = NetworkConfig::parse(EXAMPLE.as_bytes()).unwrap();
        assert!(weftd_refusals(&ok).is_empty());
        let hostgw =
            NetworkConfig::parse(br#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#)
                .unwrap();
        assert!(weftd_refusals(&hostgw).is_empty());
        let nft = NetworkConfig::parse(
            br#"{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap();
        assert!(weftd_refusals(&nft).is_empty());
        let wireguard =
            NetworkConfig::parse(br#"{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}"#)
                .unwrap();
        assert!(weftd_refusals(&wireguard)[0].contains("WireGuard support"));
        let v6 = NetworkConfig::parse(
            br#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}"#,
        )
        .unwrap();
        assert!(weftd_refusals(&v6)[0].contains("EnableIPv6"));
    }
}
