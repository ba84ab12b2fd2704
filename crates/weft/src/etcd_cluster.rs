//! `weft etcd ignition`: the files of [`weft_deploy::etcd`]'s plan written into `--out-dir`
//! (the CA reused when it is there, member and client certs, one Ignition config per member)
//! and the instructions printed. The checks, the certificates and the texts are weft-deploy's;
//! this module holds the file system effects.

use std::path::Path;

use anyhow::{Context, Result, bail};

use weft_deploy::etcd::ignition::{self, MemberPki};
use weft_deploy::etcd::pki::{self, Ca, Day, Role};
pub use weft_deploy::etcd::{EtcdCommand, IgnitionArgs};
use weft_deploy::etcd::{instructions, plan};

/// Runs an `etcd` subcommand.
pub fn run(cmd: EtcdCommand) -> Result<()> {
    match cmd {
        EtcdCommand::Ignition(args) => {
            let report = generate(&args, Day::today())?;
            print!("{report}");
            Ok(())
        }
    }
}

fn write_file(path: &Path, text: &str, private: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    let mode = if private { 0o600 } else { 0o644 };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // An existing file keeps its mode on open: set it.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn prepare_out_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let fix = "pass an --out-dir you can write; it will hold private keys, so keep it private (e.g. under your home directory)";
    if dir.exists() && !dir.is_dir() {
        bail!("--out-dir {} is not a directory; {fix}", dir.display());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| anyhow::anyhow!("cannot create --out-dir {}: {e}; {fix}", dir.display()))?;
    let probe = dir.join(".weft-write-test");
    std::fs::write(&probe, b"")
        .map_err(|e| anyhow::anyhow!("cannot write to --out-dir {}: {e}; {fix}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The CA of `dir`: reused when ca.crt and ca.key are there, else new (and written).
fn ca_in(dir: &Path, today: Day) -> Result<(Ca, bool)> {
    let cert = dir.join("ca.crt");
    let key = dir.join("ca.key");
    match (cert.exists(), key.exists()) {
        (true, true) => {
            let read = |p: &Path| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            };
            let ca = pki::load_ca(
                &read(&cert)?,
                &read(&key)?,
                &cert.display().to_string(),
                &key.display().to_string(),
                today,
            )?;
            Ok((ca, true))
        }
        (true, false) | (false, true) => {
            let (has, missing) = if cert.exists() {
                (&cert, &key)
            } else {
                (&key, &cert)
            };
            bail!(
                "{} exists but {} does not: weft reuses a CA only as a pair; restore {}, or use a new --out-dir for a new CA (every client and member must then get the new ca.crt)",
                has.display(),
                missing.display(),
                missing.display()
            )
        }
        (false, false) => {
            let ca = pki::new_ca(today)?;
            write_file(&cert, &ca.cert_pem, false)?;
            write_file(&key, &ca.key_pem, true)?;
            Ok((ca, false))
        }
    }
}

/// Checks the flags, writes every file and returns what to print.
pub fn generate(args: &IgnitionArgs, today: Day) -> Result<String> {
    let plan = plan(args)?;
    let dir = &args.out_dir;
    prepare_out_dir(dir)?;
    let (ca, reused) = ca_in(dir, today)?;
    let c = &plan.cluster;
    for (i, m) in c.members.iter().enumerate() {
        let mdir = dir.join(&m.name);
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&mdir)
                .with_context(|| format!("cannot create {}", mdir.display()))?;
        }
        let sans = [m.name.clone()];
        let server = ca.issue(&m.name, &[m.ip], &sans, Role::Server, today)?;
        let peer = ca.issue(&m.name, &[m.ip], &sans, Role::Peer, today)?;
        write_file(&mdir.join("server.crt"), &server.cert, false)?;
        write_file(&mdir.join("server.key"), &server.key, true)?;
        write_file(&mdir.join("peer.crt"), &peer.cert, false)?;
        write_file(&mdir.join("peer.key"), &peer.key, true)?;
        let cfg = ignition::config(
            c,
            i,
            &MemberPki {
                ca_cert: &ca.cert_pem,
                server_cert: &server.cert,
                server_key: &server.key,
                peer_cert: &peer.cert,
                peer_key: &peer.key,
            },
        );
        let text = serde_json::to_string_pretty(&cfg)? + "\n";
        write_file(&dir.join(format!("{}.ign", m.name)), &text, true)?;
    }
    let client = ca.issue(pki::CLIENT_CN, &[], &[], Role::Client, today)?;
    write_file(&dir.join("client.crt"), &client.cert, false)?;
    write_file(&dir.join("client.key"), &client.key, true)?;
    Ok(instructions(
        &plan,
        args,
        reused,
        ca.leaf_not_after(today),
        ca.not_after,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    fn args(list: &[&str]) -> IgnitionArgs {
        weft_deploy::etcd::parse_ignition_args(list).unwrap()
    }

    #[test]
    fn generate_writes_everything_and_reuses_the_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("pki");
        let a = args(&[
            "--members=3",
            "--private-ip=10.0.1.10",
            "--private-ip=10.0.2.10",
            "--private-ip=10.0.3.10",
            "--cluster-token=tok",
            "--out-dir",
            out.to_str().unwrap(),
        ]);
        let today = Day::today();
        let report = generate(&a, today).unwrap();
        assert!(report.contains("(new;"), "{report}");
        for f in [
            "ca.crt",
            "ca.key",
            "client.crt",
            "client.key",
            "etcd0.ign",
            "etcd2.ign",
            "etcd1/peer.key",
        ] {
            assert!(out.join(f).exists(), "{f}");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| std::fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("ca.key"), 0o600);
        assert_eq!(mode("etcd0.ign"), 0o600);
        assert_eq!(mode("."), 0o700);
        for needle in [
            "--private-ip-address 10.0.2.10",
            "--user-data file://",
            "--port 2380 --source-group <ETCD_SG_ID>",
            "weft network init --network 10.244.0.0/16 --etcd-endpoints https://10.0.1.10:2379,https://10.0.2.10:2379,https://10.0.3.10:2379 --etcd-cafile",
            "kubectl create secret generic weft-etcd-tls --from-file=ca.crt=",
            "-n kube-flannel",
        ] {
            assert!(report.contains(needle), "{needle}:\n{report}");
        }
        let ca = std::fs::read_to_string(out.join("ca.crt")).unwrap();
        let report = generate(&a, today).unwrap();
        assert!(report.contains("REUSED"), "{report}");
        assert_eq!(std::fs::read_to_string(out.join("ca.crt")).unwrap(), ca);

        std::fs::remove_file(out.join("ca.key")).unwrap();
        let e = generate(&a, today).unwrap_err().to_string();
        assert!(
            e.contains("ca.crt exists but") && e.contains("restore"),
            "{e}"
        );
    }

    #[test]
    fn unwritable_out_dir_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, "").unwrap();
        let a = args(&[
            "--members=1",
            "--private-ip=10.0.1.10",
            "--out-dir",
            file.join("sub").to_str().unwrap(),
        ]);
        let e = generate(&a, Day::today()).unwrap_err().to_string();
        assert!(e.contains("cannot create --out-dir"), "{e}");
        let a = args(&[
            "--members=1",
            "--private-ip=10.0.1.10",
            "--out-dir",
            file.to_str().unwrap(),
        ]);
        let e = generate(&a, Day::today()).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
    }
}
