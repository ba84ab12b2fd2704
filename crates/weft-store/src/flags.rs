//! The `--etcd-*` flags, defined once for weftd and the weft CLI: flanneld's names, defaults
//! and `FLANNELD_ETCD_*` environment fallbacks (flannel-compat.md 7), so a node's environment
//! and flanneld's command line work unchanged for both.

use std::path::PathBuf;

use clap::Args;

use crate::{EndpointError, StoreConfig, parse_endpoints};

/// The environment fallback of `--etcd-endpoints`.
pub const ENDPOINTS_ENV: &str = "FLANNELD_ETCD_ENDPOINTS";

/// flanneld's default `--etcd-endpoints`.
pub const DEFAULT_ENDPOINTS: &str = "http://127.0.0.1:4001,http://127.0.0.1:2379";

/// flanneld's default `--etcd-prefix`.
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";

/// How to reach etcd: flanneld's `--etcd-*` flags and their `FLANNELD_ETCD_*` fallbacks.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "etcd")]
pub struct EtcdFlags {
    /// Comma-separated etcd endpoints (http:// or https://).
    #[arg(
        long,
        env = "FLANNELD_ETCD_ENDPOINTS",
        value_name = "URLS",
        default_value = DEFAULT_ENDPOINTS
    )]
    pub etcd_endpoints: String,
    /// etcd prefix under which the network config and the subnet leases live.
    #[arg(
        long,
        env = "FLANNELD_ETCD_PREFIX",
        value_name = "PREFIX",
        default_value = DEFAULT_PREFIX
    )]
    pub etcd_prefix: String,
    /// CA that signed etcd's server certificate (https endpoints). On its own it gives
    /// server-verified TLS.
    #[arg(long, env = "FLANNELD_ETCD_CAFILE", value_name = "PATH")]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd TLS (with --etcd-keyfile).
    #[arg(long, env = "FLANNELD_ETCD_CERTFILE", value_name = "PATH")]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key for etcd TLS (with --etcd-certfile).
    #[arg(long, env = "FLANNELD_ETCD_KEYFILE", value_name = "PATH")]
    pub etcd_keyfile: Option<PathBuf>,
    /// etcd username.
    #[arg(long, env = "FLANNELD_ETCD_USERNAME", value_name = "NAME")]
    pub etcd_username: Option<String>,
    /// etcd password.
    #[arg(
        long,
        env = "FLANNELD_ETCD_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub etcd_password: Option<String>,
}

/// A bad `--etcd-endpoints` value, saying when it came from [`ENDPOINTS_ENV`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{source}{}", if *.from_env {
    " (the value comes from the environment variable FLANNELD_ETCD_ENDPOINTS; correct or unset it)"
} else {
    ""
})]
pub struct EndpointsFlagError {
    pub source: EndpointError,
    /// The value came from the environment, not the command line.
    pub from_env: bool,
}

impl EtcdFlags {
    /// Only `--etcd-endpoints` (for commands that take nothing else), the rest at defaults.
    pub fn with_endpoints(endpoints: &str) -> EtcdFlags {
        EtcdFlags {
            etcd_endpoints: endpoints.to_string(),
            etcd_prefix: DEFAULT_PREFIX.to_string(),
            etcd_cafile: None,
            etcd_certfile: None,
            etcd_keyfile: None,
            etcd_username: None,
            etcd_password: None,
        }
    }

    /// The endpoints, split on commas and checked, or an error naming the flag (and the
    /// environment variable, when the value came from there) and the fix.
    pub fn endpoints(&self) -> Result<Vec<String>, EndpointsFlagError> {
        parse_endpoints(&self.etcd_endpoints).map_err(|source| {
            let on_command_line = std::env::args().skip(1).any(|a| {
                a.trim_start_matches('-') == "etcd-endpoints"
                    || a.trim_start_matches('-').starts_with("etcd-endpoints=")
            });
            let from_env = std::env::var(ENDPOINTS_ENV).is_ok_and(|v| v == self.etcd_endpoints);
            EndpointsFlagError {
                source,
                from_env: from_env && !on_command_line,
            }
        })
    }

    /// The store config for [`crate::Store::connect`].
    pub fn store_config(&self) -> Result<StoreConfig, EndpointsFlagError> {
        Ok(StoreConfig {
            endpoints: self.endpoints()?,
            prefix: self.etcd_prefix.clone(),
            ca_file: self.etcd_cafile.clone(),
            cert_file: self.etcd_certfile.clone(),
            key_file: self.etcd_keyfile.clone(),
            username: self.etcd_username.clone(),
            password: self.etcd_password.clone(),
        })
    }
}
