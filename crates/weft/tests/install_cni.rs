//! `weft install-cni`: what the DaemonSet's init container runs (no root needed).

use std::path::Path;
use std::process::Command;

fn install(bin: &Path, conf: &Path, extra: &[&str]) -> (bool, String) {
    let plugin = Path::new(env!("CARGO_BIN_EXE_weft")).with_file_name("weft-cni");
    assert!(
        plugin.exists(),
        "build weft-cni first (cargo build --workspace --bins)"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("install-cni")
        .arg("--plugin")
        .arg(&plugin)
        .arg("--bin-dir")
        .arg(bin)
        .arg("--conf-dir")
        .arg(conf)
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn installs_idempotently_and_warns_about_a_leftover_aws_config() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, conf) = (dir.path().join("bin"), dir.path().join("net.d"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("10-aws.conflist"),
        r#"{"cniVersion":"0.4.0","name":"aws-cni","plugins":[{"type":"aws-cni"}]}"#,
    )
    .unwrap();

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
