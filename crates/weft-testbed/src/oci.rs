//! A pod sandbox ("pause") image built on the spot, without a registry or network: a tiny
//! static C program (our own code, compiled with `gcc -static`) in a one-layer OCI image,
//! written as an OCI image layout archive that `ctr images import` loads.
//!
//! Everything is written by hand (a ustar writer, the image config, manifest and index as
//! JSON, sha256 digests from `ring`, which the bed already links through rcgen), so building
//! the image needs no daemon, no registry and no container tool.

use std::path::{Path, PathBuf};
use std::process::Command;

use ring::digest::{SHA256, digest};
use serde_json::{Value, json};

use crate::{TestbedError, cmd};

/// The pause program: the sandbox's first process. It does nothing but wait for SIGTERM or
/// SIGINT (then exits 0) and reap any child that is reparented to it.
pub const PAUSE_C: &str = r#"/* weft-testbed pause: the first process of a pod sandbox. */
#include <signal.h>
#include <sys/wait.h>

static void noop(int sig) { (void)sig; }

int main(void) {
    sigset_t set;
    struct sigaction sa;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    /* Real handlers, so that a pid-namespace init (which ignores default-action signals)
       still gets them; they stay blocked and are taken with sigwait. */
    sa.sa_handler = noop;
    sa.sa_flags = 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, 0);
    sigaction(SIGINT, &sa, 0);
    sigaction(SIGCHLD, &sa, 0);
    sigprocmask(SIG_BLOCK, &set, 0);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGCHLD) {
            while (waitpid(-1, 0, WNOHANG) > 0) {
            }
            continue;
        }
        return 0;
    }
}
"#;

/// The OCI architecture name of this machine (`amd64`, `arm64`, ...).
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// One regular file of a tar archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarFile<'a> {
    /// Relative path (at most 100 bytes).
    pub path: &'a str,
    pub mode: u32,
    pub data: &'a [u8],
}

/// A ustar archive of `files` (owner root, mtime 0), ending with the two zero blocks.
pub fn tar(files: &[TarFile<'_>]) -> Result<Vec<u8>, TestbedError> {
    let mut out = Vec::new();
    for f in files {
        if f.path.is_empty() || f.path.len() > 100 || f.path.starts_with('/') {
            return Err(TestbedError::Invalid(format!(
                "tar: path {:?} must be relative, non-empty and at most 100 bytes",
                f.path
            )));
        }
        let mut h = [0u8; 512];
        let octal = |h: &mut [u8; 512], at: usize, width: usize, value: u64| {
            let s = format!("{value:0w$o}", w = width - 1);
            h[at..at + width - 1].copy_from_slice(s.as_bytes());
        };
        h[..f.path.len()].copy_from_slice(f.path.as_bytes());
        octal(&mut h, 100, 8, u64::from(f.mode & 0o7777));
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, f.data.len() as u64);
        octal(&mut h, 136, 12, 0);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        // The checksum is computed with its own field read as eight spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(f.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    let d = digest(&SHA256, data);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// An OCI image layout archive (`oci-layout`, `index.json`, `blobs/sha256/...`) of a
/// one-layer image holding `entrypoint_file` at `/<entrypoint>` (mode 0755), run as its
/// entrypoint. `name` (e.g. `localhost/weft-test/pause:1`) is set as the index's
/// `io.containerd.image.name`, the name `ctr images import` gives the image.
pub fn image_archive(name: &str, entrypoint: &str, binary: &[u8]) -> Result<Vec<u8>, TestbedError> {
    let layer = tar(&[TarFile {
        path: entrypoint,
        mode: 0o755,
        data: binary,
    }])?;
    let layer_digest = sha256_digest(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": {"Entrypoint": [format!("/{entrypoint}")]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap_or_default();
    let config_digest = sha256_digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .unwrap_or_default();
    let manifest_digest = sha256_digest(&manifest);
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": oci_arch(), "os": "linux"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))
    .unwrap_or_default();
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let (lp, cp, mp) = (
        blob(&layer_digest),
        blob(&config_digest),
        blob(&manifest_digest),
    );
    tar(&[
        TarFile {
            path: "oci-layout",
            mode: 0o644,
            data: br#"{"imageLayoutVersion":"1.0.0"}"#,
        },
        TarFile {
            path: "index.json",
            mode: 0o644,
            data: &index,
        },
        TarFile {
            path: &lp,
            mode: 0o644,
            data: &layer,
        },
        TarFile {
            path: &cp,
            mode: 0o644,
            data: &config,
        },
        TarFile {
            path: &mp,
            mode: 0o644,
            data: &manifest,
        },
    ])
}

/// A pause image built in `dir`: compiles [`PAUSE_C`] with `gcc -static` and writes the OCI
/// archive `dir/pause.oci.tar` for the image `name`. Returns the archive's path.
pub fn build_pause_image(dir: &Path, name: &str) -> Result<PathBuf, TestbedError> {
    std::fs::create_dir_all(dir).map_err(|e| TestbedError::Io {
        what: format!("creating {}", dir.display()),
        source: e,
    })?;
    let src = dir.join("pause.c");
    let bin = dir.join("pause");
    std::fs::write(&src, PAUSE_C).map_err(|e| TestbedError::Io {
        what: format!("writing {}", src.display()),
        source: e,
    })?;
    let mut c = Command::new("gcc");
    c.args(["-static", "-Os", "-s", "-o"]).arg(&bin).arg(&src);
    let out = cmd::output(&mut c, "compiling the pause program")?;
    if !out.status.success() {
        return Err(cmd::status_error(
            cmd::describe(&c),
            &out,
            "",
            "building the sandbox's pause program needs gcc and the static C library (Debian: apt-get install gcc libc6-dev)",
        ));
    }
    let binary = std::fs::read(&bin).map_err(|e| TestbedError::Io {
        what: format!("reading {}", bin.display()),
        source: e,
    })?;
    let archive = image_archive(name, "pause", &binary)?;
    let path = dir.join("pause.oci.tar");
    std::fs::write(&path, archive).map_err(|e| TestbedError::Io {
        what: format!("writing {}", path.display()),
        source: e,
    })?;
    Ok(path)
}

/// The contents of entry `path` in a ustar archive such as [`tar`] writes (for checks).
pub fn tar_entry(archive: &[u8], path: &str) -> Option<Vec<u8>> {
    let mut at = 0;
    while at + 512 <= archive.len() {
        let h = &archive[at..at + 512];
        if h.iter().all(|b| *b == 0) {
            return None;
        }
        let name_end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = std::str::from_utf8(&h[..name_end]).ok()?;
        let size_text = std::str::from_utf8(&h[124..135]).ok()?;
        let size = usize::from_str_radix(size_text.trim_matches(char::from(0)).trim(), 8).ok()?;
        let data = archive.get(at + 512..at + 512 + size)?;
        if name == path {
            return Some(data.to_vec());
        }
        at += 512 + size.div_ceil(512) * 512;
    }
    None
}

/// Parses entry `path` of an archive as JSON.
pub fn tar_json(archive: &[u8], path: &str) -> Option<Value> {
    serde_json::from_slice(&tar_entry(archive, path)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_is_read_by_gnu_tar() {
        let a = tar(&[
            TarFile {
                path: "dir/hello",
                mode: 0o755,
                data: b"hello world\n",
            },
            TarFile {
                path: "empty",
                mode: 0o644,
                data: b"",
            },
        ])
        .unwrap();
        assert_eq!(a.len() % 512, 0);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.tar");
        std::fs::write(&file, &a).unwrap();
        let out = Command::new("tar").arg("-tvf").arg(&file).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let list = String::from_utf8_lossy(&out.stdout);
        assert!(
            list.contains("-rwxr-xr-x root/root") && list.contains("dir/hello"),
            "{list}"
        );
        assert!(list.contains("empty"), "{list}");
        let out = Command::new("tar")
            .arg("-xOf")
            .arg(&file)
            .arg("dir/hello")
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"hello world\n");
        assert_eq!(tar_entry(&a, "dir/hello").unwrap(), b"hello world\n");
        assert_eq!(tar_entry(&a, "nope"), None);
    }

    #[test]
    fn tar_refuses_unusable_paths() {
        for bad in ["", "/abs", &"x".repeat(101)] {
            let e = tar(&[TarFile {
                path: bad,
                mode: 0o644,
                data: b"",
            }])
            .unwrap_err();
            assert!(e.to_string().contains("tar: path"), "{e}");
        }
    }

    #[test]
    fn digest_is_sha256() {
        assert_eq!(
            sha256_digest(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn image_archive_is_a_consistent_oci_layout() {
        let a = image_archive("localhost/weft-test/pause:t1", "pause", b"\x7fELF...").unwrap();
        let index = tar_json(&a, "index.json").unwrap();
        assert_eq!(
            tar_json(&a, "oci-layout").unwrap()["imageLayoutVersion"],
            "1.0.0"
        );
        let m = &index["manifests"][0];
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            "localhost/weft-test/pause:t1"
        );
        assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], "t1");
        assert_eq!(m["platform"]["os"], "linux");
        // Every descriptor's digest and size match the blob it names.
        let blob = |d: &Value| {
            let digest = d["digest"].as_str().unwrap();
            let path = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
            let data = tar_entry(&a, &path).unwrap();
            assert_eq!(sha256_digest(&data), digest);
            assert_eq!(d["size"].as_u64().unwrap(), data.len() as u64);
            data
        };
        let manifest: Value = serde_json::from_slice(&blob(m)).unwrap();
        let config: Value = serde_json::from_slice(&blob(&manifest["config"])).unwrap();
        let layer = blob(&manifest["layers"][0]);
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            manifest["layers"][0]["digest"]
        );
        assert_eq!(config["config"]["Entrypoint"][0], "/pause");
        assert_eq!(tar_entry(&layer, "pause").unwrap(), b"\x7fELF...");
    }
}
