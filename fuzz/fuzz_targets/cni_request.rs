#![no_main]
//! A CNI request as weft-cni receives it: the CNI_* environment, the network config on stdin
//! and the node's subnet.env. The input is those three parts separated by NUL bytes: `KEY=VALUE`
//! lines for the environment, then stdin, then the subnet.env text.
//!
//! Runs the plugin's own checks in its order (environment, config, version, name, delegate,
//! subnet.env, delegate config) without touching files or running plugins: every failure must
//! become the spec's error JSON, and an accepted request a delegate config that is a JSON object.

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use weft_cni::Error;
use weft_cni::conf::NetConf;
use weft_cni::delegate::{build_delegate, delegate_type, render, validate_delegate};
use weft_cni::env::{Command, Invocation, RawEnv};
use weft_cni::invoke::find_plugin;
use weft_cni::plugin::{fill_route_gateways, peek_version};
use weft_cni::version::{check_supported, version_reply};

/// The limit on the message in the error JSON (weft-cni's tests/bad_requests.rs).
const MAX_MESSAGE_BYTES: usize = 2048;

/// Every failure must render as `{"cniVersion","code","msg","details"}`.
fn check_error(err: &Error, stdin: &[u8]) {
    let bytes = err.to_json(&peek_version(stdin));
    let v: Value = serde_json::from_slice(&bytes).expect("the error JSON is JSON");
    assert!(v["code"].as_u64().is_some_and(|c| c > 0), "{v}");
    assert!(v["cniVersion"].is_string(), "{v}");
    let msg = v["msg"].as_str().expect("msg is a string");
    assert!(msg.len() <= MAX_MESSAGE_BYTES, "{} bytes: {msg}", msg.len());
    assert!(v["details"].is_string(), "{v}");
}

fn request(raw: &RawEnv, stdin: &[u8], subnet_env: &str) -> Result<(), Error> {
    let inv = Invocation::from_env(raw)?;
    if inv.command == Command::Version {
        let reply: Value = serde_json::from_slice(&version_reply(stdin)).expect("VERSION is JSON");
        assert!(reply["supportedVersions"].is_array(), "{reply}");
        return Ok(());
    }
    let conf = NetConf::parse(stdin)?;
    check_supported(&conf.cni_version)?;
    conf.validate()?;
    validate_delegate(conf.delegate.as_ref())?;
    if let Some(prev) = conf.prev_result.clone() {
        let _ = fill_route_gateways(prev);
    }
    let env = weft_cni::subnet::parse(subnet_env).map_err(|reason| Error::SubnetEnvInvalid {
        path: "/run/flannel/subnet.env".into(),
        reason,
    })?;
    let delegate = build_delegate(&conf, &env)?;
    // With no CNI_PATH directories this only checks the plugin name (no file is looked at).
    if let Err(err) = find_plugin(delegate_type(&delegate), &[]) {
        check_error(&err, stdin);
    }
    let rendered: Value = serde_json::from_slice(&render(&delegate)).expect("the delegate is JSON");
    assert!(rendered.is_object(), "{rendered}");
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let env_text = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let stdin = parts.next().unwrap_or_default();
    let Ok(subnet_env) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
        return;
    };
    // The last line for a variable wins, as in a shell.
    let raw = RawEnv::from_lookup(|key| {
        env_text
            .lines()
            .rev()
            .filter_map(|line| line.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_owned())
    });
    if let Err(err) = request(&raw, stdin, subnet_env) {
        check_error(&err, stdin);
    }
});
