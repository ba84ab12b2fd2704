//! `weft install-cni`: what the DaemonSet's init container runs (no root needed).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

mod common;

/// `weft install-cni <extra>` with this build's weft-cni into `bin` and `conf`.
fn install_output(bin: &Path, conf: &Path, extra: &[&str]) -> Output {
    let plugin = Path::new(env!("CARGO_BIN_EXE_weft")).with_file_name("weft-cni");
    assert!(
        plugin.exists(),
        "build weft-cni first (cargo build --workspace --bins)"
    );
    common::install_cni(&plugin, bin, conf)
        .args(extra)
        .output()
        .unwrap()
}

/// What `install_output` gave: success, and stdout then stderr.
fn install(bin: &Path, conf: &Path, extra: &[&str]) -> (bool, String) {
    let out = install_output(bin, conf, extra);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A temp dir with `bin` (not there yet) and `net.d` holding a leftover 10-aws.conflist.
fn dirs_with_an_aws_config() -> (TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (bin, conf) = (dir.path().join("bin"), dir.path().join("net.d"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("10-aws.conflist"),
        r#"{"cniVersion":"0.4.0","name":"aws-cni","plugins":[{"type":"aws-cni"}]}"#,
    )
    .unwrap();
    (dir, bin, conf)
}

#[test]
fn installs_idempotently_and_warns_about_a_leftover_aws_config() {
    let (dir, bin, conf) = dirs_with_an_aws_config();

    let (ok, dry) = install(&bin, &conf, &["--dry-run"]);
    assert!(ok, "{dry}");
    assert!(
        !conf.join("10-flannel.conflist").exists(),
        "dry run changes nothing: {dry}"
    );

    let (ok, first) = install(&bin, &conf, &[]);
    assert!(ok, "{first}");
    assert!(bin.join("flannel").exists());
    let conflist = std::fs::read_to_string(conf.join("10-flannel.conflist")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&conflist).unwrap();
    assert_eq!(v["name"], "cbr0");
    assert_eq!(v["plugins"][0]["type"], "flannel");
    assert_eq!(v["plugins"][1]["type"], "portmap");
    assert!(
        first.contains("10-aws.conflist") && first.contains("aws-cni"),
        "warns about the AWS config: {first}"
    );

    let (ok, second) = install(&bin, &conf, &[]);
    assert!(ok);
    assert!(
        second.contains("unchanged"),
        "second run changes nothing: {second}"
    );

    // a bin dir that cannot exist: the error names it
    std::fs::write(dir.path().join("a-file"), "x").unwrap();
    let (ok, bad) = install(&dir.path().join("a-file/bin"), &conf, &[]);
    assert!(!ok, "{bad}");
    assert!(bad.contains("a-file/bin"), "{bad}");
}

/// A stand-in plugin that prints `about` the way the reference plugins do when run without
/// CNI_COMMAND (the installer's decision is under test here, not the plugin).
fn fake_plugin(path: &Path, about: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\necho '{about}' >&2\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn line<'a>(text: &'a str, path: &Path) -> &'a str {
    let key = format!("delegate {}:", path.display());
    text.lines()
        .find(|l| l.starts_with(&key))
        .unwrap_or_else(|| panic!("no line for {}: {text}", path.display()))
}

#[test]
fn copies_missing_and_older_delegates_and_keeps_newer_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, conf, ours) = (
        dir.path().join("bin"),
        dir.path().join("net.d"),
        dir.path().join("weft-plugins"),
    );
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&ours).unwrap();
    for p in ["bridge", "host-local", "portmap", "loopback"] {
        fake_plugin(&ours.join(p), &format!("CNI {p} plugin v1.1.1"));
    }
    // bridge: missing (an EKS node without aws-node)
    fake_plugin(&bin.join("host-local"), "CNI host-local plugin v0.8.6");
    fake_plugin(&bin.join("portmap"), "CNI portmap plugin v1.5.1-eksbuild.1");
    fake_plugin(&bin.join("loopback"), "CNI loopback plugin version unknown");
    let pd = ours.to_str().unwrap();

    let (ok, dry) = install(&bin, &conf, &["--plugins-dir", pd, "--dry-run"]);
    assert!(ok, "{dry}");
    assert!(
        !bin.join("bridge").exists(),
        "dry run copies nothing: {dry}"
    );
    assert!(
        line(&dry, &bin.join("bridge")).contains("would copy (v1.1.1)"),
        "{dry}"
    );

    let (ok, first) = install(&bin, &conf, &["--plugins-dir", pd]);
    assert!(ok, "{first}");
    let read = |p: &str| std::fs::read_to_string(bin.join(p)).unwrap();
    assert!(read("bridge").contains("v1.1.1"), "bridge copied: {first}");
    assert!(
        line(&first, &bin.join("host-local")).contains("replaced v0.8.6 with v1.1.1"),
        "{first}"
    );
    assert!(read("host-local").contains("v1.1.1"));
    assert!(
        line(&first, &bin.join("portmap"))
            .contains("kept: its v1.5.1-eksbuild.1 is not older than weft's v1.1.1"),
        "{first}"
    );
    assert!(read("portmap").contains("v1.5.1"), "newer portmap kept");
    assert!(read("loopback").contains("version unknown"), "unknown kept");
    assert!(
        first.contains("loopback prints no version")
            && first.contains("--replace-plugins")
            && !first.contains("missing from"),
        "warns about the unknown one only: {first}"
    );
    // ours goes in before the config
    assert!(bin.join("flannel").exists() && conf.join("10-flannel.conflist").exists());

    let (ok, again) = install(&bin, &conf, &["--plugins-dir", pd]);
    assert!(ok, "{again}");
    assert!(
        line(&again, &bin.join("bridge")).contains("unchanged"),
        "{again}"
    );
    assert!(
        line(&again, &bin.join("portmap")).contains("kept"),
        "{again}"
    );

    let (ok, forced) = install(&bin, &conf, &["--plugins-dir", pd, "--replace-plugins"]);
    assert!(ok, "{forced}");
    assert!(read("portmap").contains("v1.1.1") && read("loopback").contains("v1.1.1"));
    assert!(
        line(&forced, &bin.join("portmap"))
            .contains("replaced v1.5.1-eksbuild.1 with v1.1.1 (--replace-plugins)"),
        "{forced}"
    );

    // a plugins dir without one of the four: the error names the file and the fix
    std::fs::remove_file(ours.join("portmap")).unwrap();
    let (ok, bad) = install(&bin, &conf, &["--plugins-dir", pd]);
    assert!(!ok, "{bad}");
    assert!(
        bad.contains(&format!("{}/portmap", pd)) && bad.contains("--plugins-dir must hold"),
        "{bad}"
    );
}

#[test]
fn without_a_plugins_dir_the_missing_bridge_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, conf) = (dir.path().join("bin"), dir.path().join("net.d"));
    let (ok, out) = install(&bin, &conf, &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("bridge, host-local, portmap, loopback missing from")
            && out.contains("--plugins-dir"),
        "{out}"
    );
}

#[test]
fn installs_the_real_reference_plugins_into_an_empty_bin_dir() {
    // Debian's containernetworking-plugins (scripts/deps.sh installs it).
    let debian = Path::new("/usr/lib/cni");
    assert!(
        debian.join("bridge").exists(),
        "/usr/lib/cni/bridge is missing: run scripts/deps.sh test"
    );
    let dir = tempfile::tempdir().unwrap();
    let (bin, conf) = (dir.path().join("bin"), dir.path().join("net.d"));
    let (ok, out) = install(&bin, &conf, &["--plugins-dir", "/usr/lib/cni"]);
    assert!(ok, "{out}");
    for p in ["bridge", "host-local", "portmap", "loopback"] {
        assert_eq!(
            std::fs::read(bin.join(p)).unwrap(),
            std::fs::read(debian.join(p)).unwrap(),
            "{p}"
        );
        // it runs from its new place and answers VERSION
        let v = Command::new(bin.join(p))
            .env("CNI_COMMAND", "VERSION")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&v.stdout).contains("supportedVersions"),
            "{p}: {v:?}"
        );
    }
    assert!(!out.contains("missing from"), "{out}");
}

#[test]
fn output_json_is_one_document_with_the_actions() {
    let (_dir, bin, conf) = dirs_with_an_aws_config();
    let run = |extra: &[&str]| {
        let out = install_output(&bin, &conf, extra);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
        doc
    };
    let dry = run(&["--dry-run", "-o", "json"]);
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["changed"], true, "{dry}");
    assert_eq!(dry["plugin"]["action"], "create", "{dry}");
    assert_eq!(dry["conflist"]["action"], "create", "{dry}");
    assert!(!conf.join("10-flannel.conflist").exists(), "dry run");
    let warnings = dry["warnings"].as_array().expect("warnings");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("10-aws.conflist"))),
        "{dry}"
    );
    let first = run(&["-o", "json"]);
    assert_eq!(first["plugin"]["action"], "create", "{first}");
    assert_eq!(first["plugin"]["mode"], "0755", "{first}");
    let again = run(&["--output", "json"]);
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(again["plugin"]["action"], "unchanged", "{again}");
    assert_eq!(
        again["conflist"]["path"],
        conf.join("10-flannel.conflist").display().to_string()
    );
}
