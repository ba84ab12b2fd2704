//! The verbs: from a validated invocation and the network config to stdout bytes.

use serde_json::{Map, Value};

use crate::conf::NetConf;
use crate::delegate::{self, build_delegate, validate_delegate};
use crate::env::{Command, Invocation, RawEnv};
use crate::error::Response;
use crate::invoke::{self, Exec, find_plugin};
use crate::lock::{ContainerLock, LOCK_WAIT};
use crate::state::StateStore;
use crate::version::{SpecVersion, check_supported, version_reply};
use crate::{Error, subnet};

/// Runs one plugin invocation and returns what to print and the exit status. Errors are also
/// logged to stderr (the runtime usually keeps the plugin's stderr in its log).
pub fn run(raw: &RawEnv, stdin: &[u8], exec: &dyn Exec) -> Response {
    match execute(raw, stdin, exec) {
        Ok(stdout) => Response::ok(stdout),
        Err(err) => {
            let verb = raw.command.as_deref().unwrap_or("?");
            let id = raw.container_id.as_deref().unwrap_or("");
            eprintln!("weft-cni: {verb} {id}: {err}");
            err.to_response(&peek_version(stdin))
        }
    }
}

/// The `cniVersion` written in the config, if the config can be read that far.
pub fn peek_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| Some(v.get("cniVersion")?.as_str()?.to_string()))
        .unwrap_or_default()
}

/// Runs one invocation: env checks, config decoding and version checks, then the verb.
pub fn execute(raw: &RawEnv, stdin: &[u8], exec: &dyn Exec) -> Result<Vec<u8>, Error> {
    let inv = Invocation::from_env(raw)?;
    if inv.command == Command::Version {
        return Ok(version_reply(stdin));
    }
    let conf = NetConf::parse(stdin)?;
    let version = check_supported(&conf.cni_version)?;
    conf.validate()?;
    match inv.command {
        Command::Add => add(&inv, &conf, exec),
        Command::Del => del(&inv, &conf, exec),
        Command::Check => check(&inv, &conf, version, exec),
        Command::Status => status(&inv, &conf, version),
        Command::Gc => gc(&conf, version),
        Command::Version => Ok(version_reply(stdin)),
    }
}

/// ADD: build the delegate config, save it, run the delegate's ADD and return its result
/// unchanged. A failed ADD is undone (delegate DEL, state removed).
fn add(inv: &Invocation, conf: &NetConf, exec: &dyn Exec) -> Result<Vec<u8>, Error> {
    // A config mistake is permanent; report it before a possibly transient subnet.env problem.
    validate_delegate(conf.delegate.as_ref())?;
    let env = subnet::load(&conf.subnet_file())?;
    let d = build_delegate(conf, &env)?;
    let plugin = delegate::delegate_type(&d).to_string();
    let bytes = delegate::render(&d);
    // Fail before anything is written when the delegate is not installed.
    find_plugin(&plugin, &inv.cni_path)?;

    let store = StateStore::new(conf.data_dir());
    let lock = ContainerLock::acquire(store.dir(), &inv.container_id, LOCK_WAIT)?;
    store.save(&inv.container_id, &bytes)?;
    match invoke::delegate(exec, &inv.cni_path, &plugin, Command::Add, &bytes) {
        Ok(result) => Ok(result),
        Err(err) => {
            if undo_add(inv, &store, exec, &plugin, &bytes, &err)
                && let Err(e) = lock.remove()
            {
                eprintln!("weft-cni: ADD {}: {e}", inv.container_id);
            }
            Err(err)
        }
    }
}

/// After a failed delegate ADD: ask the delegate to DEL (it may hold an IP or a veth), then
/// forget the state. If that DEL fails too, the state stays so the runtime's own DEL (which
/// it sends after a failed ADD) can finish the job. Returns whether the state is gone.
fn undo_add(
    inv: &Invocation,
    store: &StateStore,
    exec: &dyn Exec,
    plugin: &str,
    bytes: &[u8],
    add_err: &Error,
) -> bool {
    let cleaned = match add_err {
        // The delegate never ran, so it has nothing to undo.
        Error::Spawn { .. } => true,
        _ => match invoke::delegate(exec, &inv.cni_path, plugin, Command::Del, bytes) {
            Ok(_) => true,
            Err(del_err) => {
                eprintln!(
                    "weft-cni: ADD {}: undoing the failed ADD with a delegate DEL failed too: {del_err}; keeping {} so the runtime's DEL can retry",
                    inv.container_id,
                    store.path(&inv.container_id).display()
                );
                false
            }
        },
    };
    if !cleaned {
        return false;
    }
    match store.remove(&inv.container_id) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("weft-cni: ADD {}: {e}", inv.container_id);
            false
        }
    }
}

/// Reads the saved delegate config as an object with a string `type`.
fn parse_saved(bytes: &[u8]) -> Result<(Map<String, Value>, String), String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let Value::Object(map) = value else {
        return Err("not a JSON object".to_string());
    };
    let plugin = match map.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(other) => return Err(format!("\"type\" is {other}, not a string")),
        None => return Err("no \"type\"".to_string()),
    };
    Ok((map, plugin))
}

/// DEL: replay the saved delegate config. No state means nothing to do (DEL is idempotent).
///
/// Unlike flannel, which removes the state file even when the delegate DEL failed, weft
/// keeps it then, so the runtime's retry of DEL can still release the IP.
fn del(inv: &Invocation, conf: &NetConf, exec: &dyn Exec) -> Result<Vec<u8>, Error> {
    let store = StateStore::new(conf.data_dir());
    // A DEL without a data dir has nothing to delete and no ADD can be running (an ADD makes
    // the directory before its delegate runs), so it does not create one just for the lock.
    if !store.dir().exists() {
        return Ok(Vec::new());
    }
    let lock = ContainerLock::acquire(store.dir(), &inv.container_id, LOCK_WAIT)?;
    let Some(bytes) = store.load(&inv.container_id)? else {
        lock.remove()?;
        return Ok(Vec::new());
    };
    let plugin = match parse_saved(&bytes) {
        Ok((_, plugin)) => plugin,
        Err(why) => {
            // Like flannel: the runtime must be able to delete the pod. The leftover
            // interface disappears with the netns; the file stays for inspection.
            eprintln!(
                "weft-cni: DEL {}: ignoring unreadable network state {}: {why}; nothing was deleted, remove the file by hand once inspected",
                inv.container_id,
                store.path(&inv.container_id).display()
            );
            return Ok(Vec::new());
        }
    };
    invoke::delegate(exec, &inv.cni_path, &plugin, Command::Del, &bytes)?;
    store.remove(&inv.container_id)?;
    lock.remove()?;
    Ok(Vec::new())
}

/// CHECK: the delegate checks the container against the saved config, with the runtime's
/// `prevResult` (and `cniVersion`) added as the spec requires; for the bridge plugin the
/// route gateways are filled in first (see [`fill_route_gateways`]). Before 0.4.0 CHECK is
/// not defined; like flannel, it then succeeds without looking.
fn check(
    inv: &Invocation,
    conf: &NetConf,
    version: SpecVersion,
    exec: &dyn Exec,
) -> Result<Vec<u8>, Error> {
    if version < SpecVersion::CHECK {
        return Ok(Vec::new());
    }
    let store = StateStore::new(conf.data_dir());
    let lock = if store.dir().exists() {
        Some(ContainerLock::acquire(
            store.dir(),
            &inv.container_id,
            LOCK_WAIT,
        )?)
    } else {
        None
    };
    let Some(bytes) = store.load(&inv.container_id)? else {
        // The container is gone (never added, or deleted): like DEL, leave no lock file.
        if let Some(lock) = lock {
            lock.remove()?;
        }
        return Err(Error::StateMissing {
            container_id: inv.container_id.clone(),
            path: store.path(&inv.container_id),
        });
    };
    let (mut saved, plugin) = parse_saved(&bytes).map_err(|reason| Error::StateCorrupt {
        path: store.path(&inv.container_id),
        reason,
    })?;
    let prev = conf.prev_result.clone().ok_or_else(|| {
        Error::InvalidConfig(
            "CHECK needs \"prevResult\" (the ADD result) in the config; the container runtime must add it".to_string(),
        )
    })?;
    let prev = if plugin == "bridge" {
        fill_route_gateways(prev)
    } else {
        prev
    };
    saved.insert("prevResult".into(), prev);
    saved.insert("cniVersion".into(), Value::String(conf.cni_version.clone()));
    let config = crate::json::render_value(&Value::Object(saved));
    invoke::delegate(exec, &inv.cni_path, &plugin, Command::Check, &config)?;
    Ok(Vec::new())
}

/// Gives every route in a result that has no `gw` the gateway of the first result IP of its
/// family, which is the gateway the bridge plugin's ADD installed it with (libcni's
/// `ipam.ConfigureIface`).
///
/// The bridge plugin's CHECK (containernetworking-plugins 1.1.1, Debian 12) looks routes up
/// by destination *and* gateway, so flannel's routes (`{"dst": "10.244.0.0/16"}`, no `gw`)
/// never match the kernel route `10.244.0.0/16 via 10.244.1.1` and CHECK always fails.
/// flannel itself never noticed because its CHECK does nothing.
pub fn fill_route_gateways(mut result: Value) -> Value {
    let gateway_of = |want_v4: bool, result: &Value| -> Option<Value> {
        result
            .get("ips")?
            .as_array()?
            .iter()
            .filter(|ip| {
                ip.get("address")
                    .and_then(Value::as_str)
                    .and_then(|a| a.parse::<ipnet::IpNet>().ok())
                    .is_some_and(|a| matches!(a, ipnet::IpNet::V4(_)) == want_v4)
            })
            .find_map(|ip| ip.get("gateway").filter(|g| g.is_string()).cloned())
    };
    let gw4 = gateway_of(true, &result);
    let gw6 = gateway_of(false, &result);
    if let Some(routes) = result.get_mut("routes").and_then(Value::as_array_mut) {
        for route in routes.iter_mut().filter_map(Value::as_object_mut) {
            if route.get("gw").is_some_and(|g| !g.is_null()) {
                continue;
            }
            let Some(dst) = route
                .get("dst")
                .and_then(Value::as_str)
                .and_then(|d| d.parse::<ipnet::IpNet>().ok())
            else {
                continue;
            };
            let gw = match dst {
                ipnet::IpNet::V4(_) => &gw4,
                ipnet::IpNet::V6(_) => &gw6,
            };
            if let Some(gw) = gw {
                route.insert("gw".into(), gw.clone());
            }
        }
    }
    result
}

/// Refuses STATUS and GC for configs older than 1.1.0.
fn require_status_gc(verb: Command, version: SpecVersion, conf: &NetConf) -> Result<(), Error> {
    if version < SpecVersion::STATUS_GC {
        return Err(Error::VerbNeedsNewerVersion {
            verb: verb.as_str(),
            since: "1.1.0",
            version: conf.cni_version.clone(),
        });
    }
    Ok(())
}

/// STATUS: ready when an ADD would find a valid subnet.env and, if CNI_PATH is given, the
/// delegate and IPAM plugins.
fn status(inv: &Invocation, conf: &NetConf, version: SpecVersion) -> Result<Vec<u8>, Error> {
    require_status_gc(Command::Status, version, conf)?;
    validate_delegate(conf.delegate.as_ref())?;
    let env = subnet::load(&conf.subnet_file()).map_err(|e| Error::NotAvailable(e.to_string()))?;
    let d = build_delegate(conf, &env)?;
    if !inv.cni_path.is_empty() {
        let mut plugins = vec![delegate::delegate_type(&d).to_string()];
        if let Some(ipam_type) = d
            .get("ipam")
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str)
        {
            plugins.push(ipam_type.to_string());
        }
        for plugin in plugins {
            find_plugin(&plugin, &inv.cni_path).map_err(|e| Error::NotAvailable(e.to_string()))?;
        }
    }
    Ok(Vec::new())
}

/// GC: removes temp files that killed ADDs left in dataDir. Saved configs are kept: they
/// are what a later DEL needs to release the delegate's resources.
fn gc(conf: &NetConf, version: SpecVersion) -> Result<Vec<u8>, Error> {
    require_status_gc(Command::Gc, version, conf)?;
    let store = StateStore::new(conf.data_dir());
    store.remove_stale_temp_files(std::time::Duration::from_secs(600))?;
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoke::ExecOutput;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::io;
    use std::path::{Path, PathBuf};

    const RESULT: &[u8] = b"{\"cniVersion\": \"0.3.1\",\n \"ips\": [ {\"version\":\"4\",\"address\":\"10.244.1.2/24\"} ]}";
    const SUBNET_ENV: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    /// Records every plugin run and answers with a canned output per verb.
    #[derive(Default)]
    struct FakeExec {
        calls: RefCell<Vec<(String, Command, Vec<u8>)>>,
        answers: HashMap<&'static str, ExecOutput>,
    }

    impl FakeExec {
        fn failing(verb: &'static str, stdout: &str, exit_code: i32) -> FakeExec {
            let mut f = FakeExec::default();
            f.answers.insert(
                verb,
                ExecOutput {
                    stdout: stdout.as_bytes().to_vec(),
                    exit_code: Some(exit_code),
                },
            );
            f
        }
        fn verbs(&self) -> Vec<Command> {
            self.calls.borrow().iter().map(|c| c.1).collect()
        }
    }

    impl Exec for FakeExec {
        fn exec(&self, plugin: &Path, command: Command, stdin: &[u8]) -> io::Result<ExecOutput> {
            let name = plugin.file_name().unwrap().to_string_lossy().into_owned();
            self.calls
                .borrow_mut()
                .push((name, command, stdin.to_vec()));
            Ok(self
                .answers
                .get(command.as_str())
                .cloned()
                .unwrap_or_else(|| ExecOutput {
                    stdout: if command == Command::Add {
                        RESULT.to_vec()
                    } else {
                        Vec::new()
                    },
                    exit_code: Some(0),
                }))
        }
    }

    /// A temp node: subnet.env, dataDir, and a CNI_PATH dir with (empty) plugin files.
    struct Node {
        dir: tempfile::TempDir,
    }

    impl Node {
        fn new() -> Node {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("bin")).unwrap();
            for p in ["bridge", "host-local"] {
                std::fs::write(dir.path().join("bin").join(p), "").unwrap();
            }
            std::fs::write(dir.path().join("subnet.env"), SUBNET_ENV).unwrap();
            Node { dir }
        }
        fn data_dir(&self) -> PathBuf {
            self.dir.path().join("data")
        }
        fn state(&self, id: &str) -> PathBuf {
            self.data_dir().join(id)
        }
        fn conf(&self, version: &str, extra: &str) -> Vec<u8> {
            format!(
                r#"{{"cniVersion":"{version}","name":"cbr0","type":"flannel","subnetFile":"{}","dataDir":"{}","delegate":{{"hairpinMode":true,"isDefaultGateway":true}}{extra}}}"#,
                self.dir.path().join("subnet.env").display(),
                self.data_dir().display()
            )
            .into_bytes()
        }
        fn env(&self, verb: &str) -> RawEnv {
            RawEnv {
                command: Some(verb.to_string()),
                container_id: Some("c1".to_string()),
                netns: Some("/var/run/netns/pod".to_string()),
                ifname: Some("eth0".to_string()),
                args: None,
                path: Some(format!(
                    "/nonexistent:{}",
                    self.dir.path().join("bin").display()
                )),
            }
        }
    }

    #[test]
    fn add_saves_exact_delegate_config_and_passes_result_through() {
        let node = Node::new();
        let exec = FakeExec::default();
        let out = execute(&node.env("ADD"), &node.conf("0.3.1", ""), &exec).unwrap();
        assert_eq!(out, RESULT);
        let calls = exec.calls.borrow();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0, "bridge");
        assert_eq!(calls[0].1, Command::Add);
        let saved = std::fs::read(node.state("c1")).unwrap();
        assert_eq!(saved, calls[0].2);
        let want: Value = serde_json::from_str(r#"{"cniVersion":"0.3.1","forceAddress":true,"hairpinMode":true,"ipMasq":false,"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge","ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"}}"#).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&saved).unwrap(), want);
    }

    #[test]
    fn add_without_subnet_env_is_try_again_later_and_touches_nothing() {
        let node = Node::new();
        std::fs::remove_file(node.dir.path().join("subnet.env")).unwrap();
        let exec = FakeExec::default();
        let err = execute(&node.env("ADD"), &node.conf("0.3.1", ""), &exec).unwrap_err();
        assert_eq!(err.code(), 11);
        assert!(exec.verbs().is_empty());
        assert!(!node.data_dir().exists());
    }

    #[test]
    fn add_config_error_wins_over_missing_subnet_env() {
        let node = Node::new();
        std::fs::remove_file(node.dir.path().join("subnet.env")).unwrap();
        let conf = br#"{"cniVersion":"0.3.1","name":"cbr0","subnetFile":"/nonexistent","delegate":{"name":"x"}}"#;
        let err = execute(&node.env("ADD"), conf, &FakeExec::default()).unwrap_err();
        assert_eq!(err.code(), 7);
    }

    #[test]
    fn add_with_missing_delegate_binary_saves_nothing() {
        let node = Node::new();
        let exec = FakeExec::default();
        let conf = node.conf("0.3.1", "").into_iter().collect::<Vec<u8>>();
        let conf = String::from_utf8(conf)
            .unwrap()
            .replace("\"hairpinMode\"", "\"type\":\"macvlan\",\"hairpinMode\"");
        let err = execute(&node.env("ADD"), conf.as_bytes(), &exec).unwrap_err();
        assert_eq!(err.code(), 7);
        assert!(err.to_string().contains("\"macvlan\""), "{err}");
        assert!(err.to_string().contains("/nonexistent, "), "{err}");
        assert!(exec.verbs().is_empty());
        assert!(!node.state("c1").exists());
    }

    #[test]
    fn failed_add_is_undone_and_its_error_passed_through() {
        let node = Node::new();
        let body = r#"{"cniVersion":"0.3.1","code":7,"msg":"no IP addresses available"}"#;
        let exec = FakeExec::failing("ADD", body, 1);
        let resp = run(&node.env("ADD"), &node.conf("0.3.1", ""), &exec);
        assert_eq!(resp.stdout, body.as_bytes());
        assert_eq!(resp.exit_code, 1);
        assert_eq!(exec.verbs(), [Command::Add, Command::Del]);
        let calls = exec.calls.borrow();
        assert_eq!(
            calls[0].2, calls[1].2,
            "the cleanup DEL gets the same config"
        );
        assert!(!node.state("c1").exists());
    }

    #[test]
    fn failed_add_whose_cleanup_fails_keeps_state_for_the_runtime_del() {
        let node = Node::new();
        let mut exec = FakeExec::failing("ADD", r#"{"code":5,"msg":"x"}"#, 1);
        exec.answers.insert(
            "DEL",
            ExecOutput {
                stdout: br#"{"code":5,"msg":"y"}"#.to_vec(),
                exit_code: Some(1),
            },
        );
        let err = execute(&node.env("ADD"), &node.conf("0.3.1", ""), &exec).unwrap_err();
        assert_eq!(err.code(), 5);
        assert!(node.state("c1").exists());
    }

    #[test]
    fn del_replays_saved_bytes_and_is_idempotent() {
        let node = Node::new();
        let exec = FakeExec::default();
        execute(&node.env("ADD"), &node.conf("0.3.1", ""), &exec).unwrap();
        let saved = std::fs::read(node.state("c1")).unwrap();
        // DEL ignores the current subnet.env and runtimeConfig: the saved bytes are replayed.
        std::fs::remove_file(node.dir.path().join("subnet.env")).unwrap();
        let out = execute(
            &node.env("DEL"),
            &node.conf("0.3.1", r#","runtimeConfig":{"x":1}"#),
            &exec,
        )
        .unwrap();
        assert!(out.is_empty());
        assert_eq!(exec.verbs(), [Command::Add, Command::Del]);
        assert_eq!(exec.calls.borrow()[1].2, saved);
        assert!(!node.state("c1").exists());
        execute(&node.env("DEL"), &node.conf("0.3.1", ""), &exec).unwrap();
        assert_eq!(exec.verbs().len(), 2, "a second DEL runs nothing");
    }

    #[test]
    fn del_without_netns_works() {
        let node = Node::new();
        let mut env = node.env("DEL");
        env.netns = None;
        assert!(execute(&env, &node.conf("0.3.1", ""), &FakeExec::default()).is_ok());
    }

    #[test]
    fn failed_del_keeps_state_so_a_retry_can_finish() {
        let node = Node::new();
        let body = r#"{"code":11,"msg":"busy"}"#;
        let mut exec = FakeExec::failing("DEL", body, 1);
        exec.answers.remove("ADD");
        execute(&node.env("ADD"), &node.conf("0.3.1", ""), &exec).unwrap();
        let resp = run(&node.env("DEL"), &node.conf("0.3.1", ""), &exec);
        assert_eq!(resp.stdout, body.as_bytes());
        assert_eq!(resp.exit_code, 1);
        assert!(node.state("c1").exists());
        // The retry succeeds and removes it.
        let ok = FakeExec::default();
        execute(&node.env("DEL"), &node.conf("0.3.1", ""), &ok).unwrap();
        assert!(!node.state("c1").exists());
    }

    #[test]
    fn del_with_unreadable_state_succeeds_without_delegating() {
        let node = Node::new();
        std::fs::create_dir_all(node.data_dir()).unwrap();
        for junk in ["not json", "[1]", r#"{"type":5}"#, r#"{"name":"x"}"#] {
            std::fs::write(node.state("c1"), junk).unwrap();
            let exec = FakeExec::default();
            let out = execute(&node.env("DEL"), &node.conf("0.3.1", ""), &exec).unwrap();
            assert!(out.is_empty());
            assert!(exec.verbs().is_empty(), "{junk}");
        }
    }

    #[test]
    fn check_before_0_4_0_succeeds_without_looking() {
        let node = Node::new();
        let exec = FakeExec::default();
        for v in ["0.3.1", "0.3.0", "0.2.0"] {
            assert!(
                execute(&node.env("CHECK"), &node.conf(v, ""), &exec)
                    .unwrap()
                    .is_empty()
            );
        }
        assert!(exec.verbs().is_empty());
    }

    #[test]
    fn check_without_state_is_unknown_container() {
        let node = Node::new();
        let err = execute(
            &node.env("CHECK"),
            &node.conf("1.0.0", r#","prevResult":{}"#),
            &FakeExec::default(),
        )
        .unwrap_err();
        assert_eq!(err.code(), 3);
        let msg = err.to_string();
        assert!(msg.contains("\"c1\""), "{msg}");
        assert!(
            msg.contains(&node.state("c1").display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn check_after_del_leaves_no_lock_file() {
        let node = Node::new();
        let exec = FakeExec::default();
        execute(&node.env("ADD"), &node.conf("1.0.0", ""), &exec).unwrap();
        execute(&node.env("DEL"), &node.conf("1.0.0", ""), &exec).unwrap();
        let locks = node.data_dir().join(".locks");
        assert!(!locks.join("c1").exists(), "DEL removes the lock file");
        let err = execute(
            &node.env("CHECK"),
            &node.conf("1.0.0", r#","prevResult":{}"#),
            &exec,
        )
        .unwrap_err();
        assert_eq!(err.code(), 3);
        assert!(
            !locks.join("c1").exists(),
            "a CHECK of a deleted container leaves no lock file"
        );
    }

    #[test]
    fn check_delegates_with_prev_result_and_version() {
        let node = Node::new();
        let exec = FakeExec::default();
        execute(&node.env("ADD"), &node.conf("0.4.0", ""), &exec).unwrap();
        let prev = r#"{"cniVersion":"1.0.0","ips":[{"address":"10.244.1.2/24","gateway":"10.244.1.1"}],"routes":[{"dst":"10.244.0.0/16"}]}"#;
        let out = execute(
            &node.env("CHECK"),
            &node.conf("1.0.0", &format!(r#","prevResult":{prev}"#)),
            &exec,
        )
        .unwrap();
        assert!(out.is_empty());
        assert_eq!(exec.verbs(), [Command::Add, Command::Check]);
        let sent: Value = serde_json::from_slice(&exec.calls.borrow()[1].2).unwrap();
        let mut want: Value = serde_json::from_str(prev).unwrap();
        want["routes"][0]["gw"] = "10.244.1.1".into();
        assert_eq!(sent["prevResult"], want);
        assert_eq!(sent["cniVersion"], "1.0.0");
        assert_eq!(sent["type"], "bridge");
        assert_eq!(sent["ipam"]["ranges"][0][0]["subnet"], "10.244.1.0/24");
    }

    #[test]
    fn route_gateways_are_filled_from_the_ips_of_the_same_family() {
        let prev: Value = serde_json::from_str(
            r#"{"cniVersion":"1.0.0",
                "ips":[{"address":"fc00:0:0:1::5/64","gateway":"fc00:0:0:1::1"},{"address":"10.244.1.5/24","gateway":"10.244.1.1"}],
                "routes":[{"dst":"10.244.0.0/16"},{"dst":"fc00::/48"},{"dst":"0.0.0.0/0","gw":"10.244.1.254"},{"dst":"1.2.3.0/24","gw":null},{"dst":"bad"}]}"#,
        )
        .unwrap();
        let filled = fill_route_gateways(prev);
        assert_eq!(
            filled["routes"],
            serde_json::json!([
                {"dst":"10.244.0.0/16","gw":"10.244.1.1"},
                {"dst":"fc00::/48","gw":"fc00:0:0:1::1"},
                {"dst":"0.0.0.0/0","gw":"10.244.1.254"},
                {"dst":"1.2.3.0/24","gw":"10.244.1.1"},
                {"dst":"bad"}
            ])
        );
        // Without gateways or routes nothing changes.
        let bare = serde_json::json!({"ips":[{"address":"10.244.1.5/24"}],"routes":[{"dst":"10.0.0.0/8"}]});
        assert_eq!(fill_route_gateways(bare.clone()), bare);
        assert_eq!(
            fill_route_gateways(serde_json::json!({})),
            serde_json::json!({})
        );
    }

    #[test]
    fn check_needs_prev_result_and_reports_delegate_failure() {
        let node = Node::new();
        let exec = FakeExec::failing("CHECK", r#"{"code":7,"msg":"eth0 has no IP"}"#, 1);
        execute(&node.env("ADD"), &node.conf("1.0.0", ""), &exec).unwrap();
        let err = execute(&node.env("CHECK"), &node.conf("1.0.0", ""), &exec).unwrap_err();
        assert_eq!(err.code(), 7);
        assert!(err.to_string().contains("prevResult"), "{err}");
        let err = execute(
            &node.env("CHECK"),
            &node.conf("1.0.0", r#","prevResult":{}"#),
            &exec,
        )
        .unwrap_err();
        assert!(err.to_string().contains("eth0 has no IP"), "{err}");
    }

    #[test]
    fn corrupt_state_on_check_is_reported() {
        let node = Node::new();
        std::fs::create_dir_all(node.data_dir()).unwrap();
        std::fs::write(node.state("c1"), "garbage").unwrap();
        let err = execute(
            &node.env("CHECK"),
            &node.conf("1.0.0", r#","prevResult":{}"#),
            &FakeExec::default(),
        )
        .unwrap_err();
        assert_eq!(err.code(), 999);
        assert!(err.to_string().contains("delete the pod"), "{err}");
    }

    #[test]
    fn unsupported_version_is_refused_before_anything_else() {
        let node = Node::new();
        for verb in ["ADD", "DEL", "CHECK", "STATUS", "GC"] {
            let exec = FakeExec::default();
            let err = execute(&node.env(verb), &node.conf("0.5.0", ""), &exec).unwrap_err();
            assert_eq!(err.code(), 1, "{verb}");
            assert!(exec.verbs().is_empty());
        }
        assert!(!node.data_dir().exists());
    }

    #[test]
    fn version_needs_no_config() {
        let env = RawEnv {
            command: Some("VERSION".to_string()),
            ..RawEnv::default()
        };
        let out = execute(&env, b"", &FakeExec::default()).unwrap();
        assert!(out.starts_with(br#"{"cniVersion":"1.1.0","supportedVersions":["#));
        let out = execute(&env, br#"{"cniVersion":"0.4.0"}"#, &FakeExec::default()).unwrap();
        assert!(out.starts_with(br#"{"cniVersion":"0.4.0","#));
    }

    #[test]
    fn status_reports_readiness() {
        let node = Node::new();
        let exec = FakeExec::default();
        let err = execute(&node.env("STATUS"), &node.conf("1.0.0", ""), &exec).unwrap_err();
        assert_eq!(err.code(), 1);
        assert!(err.to_string().contains("1.1.0"), "{err}");
        assert!(
            execute(&node.env("STATUS"), &node.conf("1.1.0", ""), &exec)
                .unwrap()
                .is_empty()
        );
        std::fs::remove_file(node.dir.path().join("bin/host-local")).unwrap();
        let err = execute(&node.env("STATUS"), &node.conf("1.1.0", ""), &exec).unwrap_err();
        assert_eq!(err.code(), 50);
        assert!(err.to_string().contains("host-local"), "{err}");
        std::fs::remove_file(node.dir.path().join("subnet.env")).unwrap();
        let err = execute(&node.env("STATUS"), &node.conf("1.1.0", ""), &exec).unwrap_err();
        assert_eq!(err.code(), 50);
        assert!(
            err.to_string().contains("not running or not ready"),
            "{err}"
        );
        assert!(exec.verbs().is_empty());
    }

    #[test]
    fn gc_keeps_saved_state() {
        let node = Node::new();
        let exec = FakeExec::default();
        execute(&node.env("ADD"), &node.conf("1.1.0", ""), &exec).unwrap();
        let gc = execute(
            &node.env("GC"),
            &node.conf("1.1.0", r#","cni.dev/valid-attachments":[]"#),
            &exec,
        )
        .unwrap();
        assert!(gc.is_empty());
        assert!(node.state("c1").exists());
        let err = execute(&node.env("GC"), &node.conf("1.0.0", ""), &exec).unwrap_err();
        assert_eq!(err.code(), 1);
    }

    #[test]
    fn run_renders_errors_as_cni_json_with_the_config_version() {
        let node = Node::new();
        std::fs::remove_file(node.dir.path().join("subnet.env")).unwrap();
        let resp = run(
            &node.env("ADD"),
            &node.conf("0.3.1", ""),
            &FakeExec::default(),
        );
        assert_eq!(resp.exit_code, 1);
        let v: Value = serde_json::from_slice(&resp.stdout).unwrap();
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["code"], 11);
        assert!(v["msg"].as_str().unwrap().contains("subnet.env"));

        let resp = run(&node.env("ADD"), b"{oops", &FakeExec::default());
        let v: Value = serde_json::from_slice(&resp.stdout).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["code"], 6);
        assert!(!v["details"].as_str().unwrap().is_empty());
    }

    #[test]
    fn missing_name_is_invalid_config() {
        let node = Node::new();
        let err = execute(
            &node.env("ADD"),
            br#"{"cniVersion":"0.3.1","type":"flannel"}"#,
            &FakeExec::default(),
        )
        .unwrap_err();
        assert_eq!(err.code(), 7);
    }
}
