//! Parsers for what the operator hands to `weft doctor` and what weftd serves: kubelet's
//! `maxPods`, a flanneld/weftd container's args, and weftd's Prometheus metrics. Pure.

/// `maxPods` of a kubelet config file: JSON (AL2's kubelet-config.json, AL2023's config.json
/// and its drop-ins) or YAML (a `KubeletConfiguration` document). `Ok(None)` when the file does
/// not set it.
pub fn max_pods(text: &str) -> Result<Option<u32>, String> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("it is not valid JSON ({e})"))?;
        return match v.get("maxPods") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| format!("maxPods is {n}, not a pod count")),
        };
    }
    // YAML: a top-level `maxPods: N` line (kubelet's config has no nested maxPods).
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("maxPods:") else {
            continue;
        };
        let value = rest.split('#').next().unwrap_or("").trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        found = Some(
            value
                .parse::<u32>()
                .map_err(|_| format!("maxPods is {value:?}, not a pod count"))?,
        );
    }
    Ok(found)
}

/// What the args of a flanneld or weftd container say about the subnet manager.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlannelArgs {
    /// `--kube-subnet-mgr` (last one wins; `=false` turns it off).
    pub kube_subnet_mgr: bool,
    /// The `--kube-subnet-mgr...` text as written, when present.
    pub kube_flag: Option<String>,
    /// `--etcd-endpoints`.
    pub etcd_endpoints: Option<String>,
    /// `--ip-masq` given (and not `=false`).
    pub ip_masq: bool,
}

/// Go's strconv.ParseBool, which flanneld's flags use.
fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Reads container args as pasted from a manifest (`- --kube-subnet-mgr`), from `kubectl get
/// -o jsonpath` (`["--ip-masq","--kube-subnet-mgr"]`), or from a command line. Both Go flag
/// forms (`-flag`, `--flag`, `--flag=value`) and weftd's `--flag value` for booleans count,
/// and so do `FLANNELD_KUBE_SUBNET_MGR=...` / `FLANNELD_IP_MASQ=...` environment lines.
pub fn flannel_args(text: &str) -> FlannelArgs {
    let tokens: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '[' | ']'))
        .map(|t| t.trim_matches(','))
        .filter(|t| !t.is_empty() && *t != "-")
        .collect();
    let mut out = FlannelArgs::default();
    for (i, tok) in tokens.iter().enumerate() {
        let (name, value) = if let Some(flag) = tok.strip_prefix("--").or(tok.strip_prefix('-')) {
            match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (flag.to_string(), None),
            }
        } else if let Some((env, v)) = tok.split_once('=')
            && let Some(flag) = env.strip_prefix("FLANNELD_")
        {
            (
                flag.to_ascii_lowercase().replace('_', "-"),
                Some(v.to_string()),
            )
        } else {
            continue;
        };
        // A bare boolean flag may be followed by its value (weftd's clap form).
        let next_bool = || tokens.get(i + 1).and_then(|n| go_bool(n));
        let as_bool = |value: &Option<String>| match value {
            Some(v) => go_bool(v).unwrap_or(true),
            None => next_bool().unwrap_or(true),
        };
        match name.as_str() {
            "kube-subnet-mgr" => {
                out.kube_subnet_mgr = as_bool(&value);
                out.kube_flag = Some(tok.to_string());
            }
            "ip-masq" => out.ip_masq = as_bool(&value),
            "etcd-endpoints" => {
                out.etcd_endpoints = value.or_else(|| tokens.get(i + 1).map(|s| s.to_string()))
            }
            _ => {}
        }
    }
    out
}

/// The weftd metrics `weft doctor` reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub ready: Option<f64>,
    pub lease_held: Option<f64>,
    pub peers_known: Option<f64>,
    pub peers_programmed: Option<f64>,
    /// `weft_errors_total{kind=...}` with a non-zero count.
    pub errors: Vec<(String, f64)>,
}

/// Reads the Prometheus text format weftd serves.
pub fn metrics(text: &str) -> Metrics {
    let mut m = Metrics::default();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let (base, labels) = match name.split_once('{') {
            Some((b, l)) => (b, l.trim_end_matches('}')),
            None => (name, ""),
        };
        match base {
            "weft_ready" => m.ready = Some(value),
            "weft_lease_held" => m.lease_held = Some(value),
            "weft_peers_known" => m.peers_known = Some(value),
            "weft_peers_programmed" => m.peers_programmed = Some(value),
            "weft_errors_total" if value > 0.0 => {
                let kind = labels
                    .split(',')
                    .find_map(|l| l.strip_prefix("kind="))
                    .unwrap_or("")
                    .trim_matches('"')
                    .to_string();
                m.errors.push((kind, value));
            }
            _ => {}
        }
    }
    m
}
