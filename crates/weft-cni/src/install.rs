//! Installing weft-cni on a node: the plugin binary into the CNI bin dir and the network
//! config into the CNI conf dir, what flannel's two init containers (`install-cni-plugin`,
//! `install-cni`) do, plus the checks they leave out.
//!
//! - The plugin is copied to `<bin_dir>/flannel` and the conflist written to
//!   `<conf_dir>/10-flannel.conflist` atomically (temp file in the same directory, fsync,
//!   rename, fsync of the directory). A runtime never reads half a config, and replacing a
//!   plugin that is running works: `cp -f` onto a running binary fails with ETXTBSY, while a
//!   rename leaves the running copy's inode alone.
//! - The plugin goes in before the conflist: the runtime may start using the config the
//!   moment it appears, and then the plugin must already be there.
//! - Identical content is left alone (a wrong mode is fixed), so a second run changes
//!   nothing and reports "unchanged".
//! - The delegate plugins (bridge, host-local, portmap, loopback) are copied from a plugins dir
//!   first, each only when missing or older than ours ([`plugins`]).
//! - Warnings come back as data ([`InstallWarning`]): another config that sorts before ours
//!   (the runtime uses the first one, so ours would be ignored; the VPC CNI's leftover
//!   `10-aws.conflist` is the classic case, error E4), plugins whose version cannot be read,
//!   and companion plugins still missing.
//!
//! The decisions (rendering, what sorts before, what to do with each file) are pure
//! functions; [`install`] only gathers facts and applies the plan.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::version::SUPPORTED_VERSIONS;

pub mod plugins;

use plugins::{PluginAction, PluginVersion};

/// Where kubelet / containerd look for CNI plugins by default.
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
/// Where kubelet / containerd look for CNI network configs by default.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// The file name kube-flannel.yml installs the config as.
pub const DEFAULT_CONFLIST_NAME: &str = "10-flannel.conflist";
/// The `cniVersion` kube-flannel.yml ships.
pub const DEFAULT_CNI_VERSION: &str = "0.3.1";
/// The network name kube-flannel.yml ships.
pub const DEFAULT_NETWORK_NAME: &str = "cbr0";
/// The plugin's file name in the bin dir: the conflist's `"type": "flannel"`.
pub const PLUGIN_FILE_NAME: &str = "flannel";
/// File extensions a container runtime loads as network configs (libcni `ConfFiles`, used
/// by containerd's go-cni and CRI-O).
pub const CONFIG_EXTENSIONS: &[&str] = &["conf", "conflist", "json"];
/// Plugins that must sit next to ours: the delegate (`bridge`), its IPAM (`host-local`),
/// the chained `portmap`, and `loopback`, which containerd runs for every pod sandbox.
pub const COMPANION_PLUGINS: &[&str] = &["bridge", "host-local", "portmap", "loopback"];

/// Where the weft image keeps the delegate plugins it installs (static builds of the reference
/// plugins, see scripts/image.sh).
pub const DEFAULT_PLUGINS_DIR: &str = "/usr/lib/weft/cni";

/// Mode of the installed plugin.
pub const PLUGIN_MODE: u32 = 0o755;
/// Mode of the installed conflist.
pub const CONFLIST_MODE: u32 = 0o644;

/// What to install where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// The weft-cni binary to copy.
    pub plugin_src: PathBuf,
    /// The CNI bin dir ([`DEFAULT_BIN_DIR`]); the plugin becomes `<bin_dir>/flannel`.
    pub bin_dir: PathBuf,
    /// The CNI conf dir ([`DEFAULT_CONF_DIR`]).
    pub conf_dir: PathBuf,
    /// The conflist's file name ([`DEFAULT_CONFLIST_NAME`]); must end in `.conflist`.
    pub conflist_name: String,
    /// `cniVersion` of the conflist ([`DEFAULT_CNI_VERSION`]).
    pub cni_version: String,
    /// `name` of the network ([`DEFAULT_NETWORK_NAME`]).
    pub network_name: String,
    /// Where to copy the delegate plugins ([`COMPANION_PLUGINS`]) from; `None`: copy none.
    pub plugins_dir: Option<PathBuf>,
    /// Replace delegate plugins that are as new or newer, or whose version cannot be read.
    pub replace_plugins: bool,
    /// Report what would be done, change nothing.
    pub dry_run: bool,
}

impl InstallOptions {
    /// The kube-flannel defaults, installing `plugin_src`.
    pub fn new(plugin_src: impl Into<PathBuf>) -> InstallOptions {
        InstallOptions {
            plugin_src: plugin_src.into(),
            bin_dir: PathBuf::from(DEFAULT_BIN_DIR),
            conf_dir: PathBuf::from(DEFAULT_CONF_DIR),
            conflist_name: DEFAULT_CONFLIST_NAME.to_string(),
            cni_version: DEFAULT_CNI_VERSION.to_string(),
            network_name: DEFAULT_NETWORK_NAME.to_string(),
            plugins_dir: None,
            replace_plugins: false,
            dry_run: false,
        }
    }

    /// `<bin_dir>/flannel`.
    pub fn plugin_path(&self) -> PathBuf {
        self.bin_dir.join(PLUGIN_FILE_NAME)
    }

    /// `<conf_dir>/<conflist_name>`.
    pub fn conflist_path(&self) -> PathBuf {
        self.conf_dir.join(&self.conflist_name)
    }

    /// Checks the options that are not paths.
    pub fn validate(&self) -> Result<(), InstallError> {
        if self.plugin_src.as_os_str().is_empty() {
            return Err(InstallError::Invalid(
                "no plugin source given; pass the path of the weft-cni binary to install"
                    .to_string(),
            ));
        }
        let name = &self.conflist_name;
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(InstallError::Invalid(format!(
                "conflist name {name:?} is not a file name; use a plain name such as {DEFAULT_CONFLIST_NAME:?}"
            )));
        }
        if !name.ends_with(".conflist") || name == ".conflist" {
            return Err(InstallError::Invalid(format!(
                "conflist name {name:?} must end in \".conflist\": runtimes read .conf and .json files as single-plugin configs, and this config is a plugin list (e.g. {DEFAULT_CONFLIST_NAME:?})"
            )));
        }
        if !SUPPORTED_VERSIONS.contains(&self.cni_version.as_str()) {
            return Err(InstallError::Invalid(format!(
                "cniVersion {:?} is not one weft-cni speaks; use one of {} (kube-flannel uses {DEFAULT_CNI_VERSION})",
                self.cni_version,
                SUPPORTED_VERSIONS.join(", ")
            )));
        }
        if !crate::conf::valid_network_name(&self.network_name) {
            return Err(InstallError::Invalid(format!(
                "network name {:?} is invalid; it must start with a letter or digit and contain only letters, digits, '_', '.' and '-' (kube-flannel uses {DEFAULT_NETWORK_NAME:?})",
                self.network_name
            )));
        }
        Ok(())
    }
}

/// What happens (or, in a dry run, would happen) to one installed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAction {
    /// The file does not exist yet.
    Create,
    /// The file exists with other content (or is not a regular file).
    Replace,
    /// The content is right, the mode is not.
    FixMode,
    /// Content and mode are already right.
    Unchanged,
}

impl FileAction {
    /// The words for a report line.
    pub fn describe(self, dry_run: bool, mode: u32) -> String {
        match (self, dry_run) {
            (FileAction::Create, false) => "created".to_string(),
            (FileAction::Create, true) => "would create".to_string(),
            (FileAction::Replace, false) => "replaced (the content differed)".to_string(),
            (FileAction::Replace, true) => "would replace (the content differs)".to_string(),
            (FileAction::FixMode, false) => format!("mode set to {mode:04o}"),
            (FileAction::FixMode, true) => format!("would set mode to {mode:04o}"),
            (FileAction::Unchanged, _) => "unchanged".to_string(),
        }
    }
}

/// One installed file and what was done to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// The file.
    pub path: PathBuf,
    /// What was (or would be) done.
    pub action: FileAction,
    /// Its mode.
    pub mode: u32,
}

/// Something the operator should know; the install itself went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallWarning {
    /// Another network config sorts before ours, so the runtime uses it instead.
    ShadowedBy {
        /// The conf dir.
        conf_dir: PathBuf,
        /// The other file's name.
        file: String,
        /// Our conflist's name.
        ours: String,
        /// The plugin the other config sends pods to (its first plugin's `type`), if readable.
        plugin: Option<String>,
    },
    /// A delegate plugin in the bin dir prints no version, so it was kept as it is.
    UnknownPluginVersion {
        /// The plugin in the bin dir.
        path: PathBuf,
        /// The version of the copy that was not installed.
        ours: Option<String>,
    },
    /// Plugins our config or the runtime needs are not in the bin dir.
    MissingPlugins {
        /// The bin dir.
        bin_dir: PathBuf,
        /// The missing plugin names, in [`COMPANION_PLUGINS`] order.
        missing: Vec<String>,
    },
}

impl InstallWarning {
    /// Whether this is the VPC CNI's config (error E4 when left behind).
    fn is_aws(file: &str, plugin: Option<&str>) -> bool {
        plugin == Some("aws-cni") || file.contains("aws")
    }
}

impl fmt::Display for InstallWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallWarning::ShadowedBy {
                conf_dir,
                file,
                ours,
                plugin,
            } => {
                let path = conf_dir.join(file);
                if InstallWarning::is_aws(file, plugin.as_deref()) {
                    write!(
                        f,
                        "{} sorts before {ours}: the container runtime uses the first config in lexicographic order, so {file} wins and pods keep going to aws-cni (error E4: \"dial tcp 127.0.0.1:50051: connect: connection refused\" once ipamd is gone); remove it or run `weft node cleanup-vpc-cni`",
                        path.display()
                    )
                } else {
                    let target = match plugin {
                        Some(p) => format!("plugin {p:?}"),
                        None => "the plugin it names".to_string(),
                    };
                    write!(
                        f,
                        "{} sorts before {ours}: the container runtime uses the first config in lexicographic order, so {file} wins and pods go to {target}, not weft; remove it, or move it out of {} (renaming it within the directory works only if the new name does not end in .conf, .conflist or .json)",
                        path.display(),
                        conf_dir.display()
                    )
                }
            }
            InstallWarning::UnknownPluginVersion { path, ours } => write!(
                f,
                "{} prints no version (run without CNI_COMMAND, a CNI plugin prints \"CNI <name> plugin <version>\"), so it was kept rather than replaced with weft's {}; if pods fail in it, run install-cni again with --replace-plugins",
                path.display(),
                ours.as_deref().unwrap_or("copy")
            ),
            InstallWarning::MissingPlugins { bin_dir, missing } => write!(
                f,
                "{} missing from {}: the config delegates to bridge with host-local IPAM and chains portmap, and containerd runs loopback for every pod, so pods cannot start without them (an EKS node has no bridge once aws-node is gone: the VPC CNI's init container copies only loopback, portmap, bandwidth and host-local); run install-cni with --plugins-dir pointing at the reference plugins (the weft image has static builds in {DEFAULT_PLUGINS_DIR})",
                missing.join(", "),
                bin_dir.display()
            ),
        }
    }
}

/// One delegate plugin in the bin dir and what was done to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegateChange {
    /// `<bin_dir>/<name>`.
    pub path: PathBuf,
    /// What was (or would be) done.
    pub action: PluginAction,
    /// The version of the copy from the plugins dir.
    pub ours: Option<String>,
}

/// What [`install`] did (or would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// Nothing was changed; the actions say what would have been.
    pub dry_run: bool,
    /// Directories that were (or would be) created.
    pub created_dirs: Vec<PathBuf>,
    /// The delegate plugins, in [`COMPANION_PLUGINS`] order (empty without a plugins dir).
    pub delegates: Vec<DelegateChange>,
    /// `<bin_dir>/flannel`.
    pub plugin: FileChange,
    /// `<conf_dir>/<conflist_name>`.
    pub conflist: FileChange,
    /// Problems found on the node.
    pub warnings: Vec<InstallWarning>,
}

impl InstallReport {
    /// Whether anything was (or, in a dry run, would be) changed.
    pub fn changed(&self) -> bool {
        !self.created_dirs.is_empty()
            || self
                .delegates
                .iter()
                .any(|d| d.action.writes() || d.action == PluginAction::FixMode)
            || self.plugin.action != FileAction::Unchanged
            || self.conflist.action != FileAction::Unchanged
    }
}

impl fmt::Display for InstallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            writeln!(f, "dry run: nothing was changed")?;
        }
        for dir in &self.created_dirs {
            let verb = if self.dry_run {
                "would create"
            } else {
                "created"
            };
            writeln!(f, "directory {}: {verb}", dir.display())?;
        }
        for d in &self.delegates {
            writeln!(
                f,
                "delegate {}: {}",
                d.path.display(),
                d.action.describe(self.dry_run, d.ours.as_deref())
            )?;
        }
        for (what, change) in [("plugin", &self.plugin), ("config", &self.conflist)] {
            writeln!(
                f,
                "{what} {}: {}",
                change.path.display(),
                change.action.describe(self.dry_run, change.mode)
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// Why an install failed; every message names the path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// An option is unusable.
    #[error("invalid install option: {0}")]
    Invalid(String),

    /// The plugin binary to copy cannot be read.
    #[error(
        "cannot read the weft-cni binary {}: {reason}; point the plugin source at the weft-cni binary (build it with `cargo build --release -p weft-cni`)",
        path.display()
    )]
    PluginSource {
        /// The source path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A delegate plugin to copy cannot be read.
    #[error(
        "cannot read the delegate plugin {}: {reason}; --plugins-dir must hold bridge, host-local, portmap and loopback (the weft image has them in {DEFAULT_PLUGINS_DIR}; Debian: /usr/lib/cni from containernetworking-plugins, which needs glibc 2.34 on the host)",
        path.display()
    )]
    DelegateSource {
        /// The source path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A file system operation on the node failed.
    #[error("failed to {action} {}: {source}; {fix}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
        /// What to check.
        fix: String,
    },
}

// ---------------------------------------------------------------------------------------
// Pure parts.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfList<'a> {
    name: &'a str,
    cni_version: &'a str,
    plugins: (FlannelEntry, PortmapEntry),
}

#[derive(Serialize)]
struct FlannelEntry {
    #[serde(rename = "type")]
    kind: &'static str,
    delegate: Delegate,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Delegate {
    hairpin_mode: bool,
    is_default_gateway: bool,
}

#[derive(Serialize)]
struct PortmapEntry {
    #[serde(rename = "type")]
    kind: &'static str,
    capabilities: Capabilities,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Capabilities {
    port_mappings: bool,
}

/// The kube-flannel `cbr0` conflist (flannel as the first plugin, delegating to bridge with
/// hairpin mode and the default route, then portmap for hostPort), pretty-printed with the
/// keys in kube-flannel's order and a trailing newline.
pub fn render_conflist(network_name: &str, cni_version: &str) -> Vec<u8> {
    let list = ConfList {
        name: network_name,
        cni_version,
        plugins: (
            FlannelEntry {
                kind: PLUGIN_FILE_NAME,
                delegate: Delegate {
                    hairpin_mode: true,
                    is_default_gateway: true,
                },
            },
            PortmapEntry {
                kind: "portmap",
                capabilities: Capabilities {
                    port_mappings: true,
                },
            },
        ),
    };
    // Serializing plain structs into a Vec cannot fail.
    let mut out = serde_json::to_vec_pretty(&list).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Whether a runtime would load `name` from the conf dir (by extension, as libcni does).
pub fn is_network_config_name(name: &str) -> bool {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| CONFIG_EXTENSIONS.contains(&e))
}

/// The network configs among `names` that a runtime would pick before `ours`: config
/// files (see [`is_network_config_name`]) that sort before it byte-wise (Go's
/// `sort.Strings`, which containerd's go-cni applies), in that order.
pub fn configs_sorting_before<'a>(
    ours: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let mut before: Vec<String> = names
        .into_iter()
        .filter(|n| is_network_config_name(n) && n.as_bytes() < ours.as_bytes())
        .map(str::to_string)
        .collect();
    before.sort();
    before.dedup();
    before
}

/// The plugin a network config sends pods to: the first plugin's `type` of a list, or the
/// `type` of a single config. `None` when unreadable.
pub fn config_plugin_type(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let entry = match v.get("plugins") {
        Some(plugins) => plugins.get(0)?,
        None => &v,
    };
    entry.get("type")?.as_str().map(str::to_string)
}

/// The [`COMPANION_PLUGINS`] not among `present` (names of executables in the bin dir).
pub fn missing_plugins<'a>(present: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let present: Vec<&str> = present.into_iter().collect();
    COMPANION_PLUGINS
        .iter()
        .filter(|p| !present.contains(p))
        .map(|p| p.to_string())
        .collect()
}

/// What is at an installed file's place now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Nothing.
    Missing,
    /// Something that is not a regular file (a dangling symlink, a device, ...).
    Other,
    /// A regular file (symlinks followed).
    File {
        /// Whether its content is the wanted content.
        same_content: bool,
        /// Its mode bits.
        mode: u32,
    },
}

/// What to do with a file that should hold the wanted content with `mode`.
pub fn plan_file(existing: Existing, mode: u32) -> FileAction {
    match existing {
        Existing::Missing => FileAction::Create,
        Existing::Other
        | Existing::File {
            same_content: false,
            ..
        } => FileAction::Replace,
        Existing::File { mode: have, .. } if have & 0o7777 != mode => FileAction::FixMode,
        Existing::File { .. } => FileAction::Unchanged,
    }
}

// ---------------------------------------------------------------------------------------
// Effects.

/// Installs the plugin and the conflist (see the module docs). In a dry run nothing is
/// changed and the report says what would be.
pub fn install(opts: &InstallOptions) -> Result<InstallReport, InstallError> {
    opts.validate()?;
    let plugin_bytes = read_plugin_source(&opts.plugin_src)?;
    let conflist_bytes = render_conflist(&opts.network_name, &opts.cni_version);

    let mut created_dirs = Vec::new();
    for dir in [&opts.bin_dir, &opts.conf_dir] {
        if !dir_exists(dir)? && !created_dirs.contains(dir) {
            created_dirs.push(dir.clone());
        }
    }

    let plugin_path = opts.plugin_path();
    let conflist_path = opts.conflist_path();
    let plugin_action = plan_file(existing_file(&plugin_path, &plugin_bytes)?, PLUGIN_MODE);
    let conflist_action = plan_file(
        existing_file(&conflist_path, &conflist_bytes)?,
        CONFLIST_MODE,
    );

    let mut warnings = shadow_warnings(&opts.conf_dir, &opts.conflist_name)?;
    let delegates = match &opts.plugins_dir {
        Some(dir) => plan_delegates(dir, opts)?,
        None => Vec::new(),
    };
    for (d, _) in &delegates {
        if d.action == PluginAction::KeepUnknown {
            warnings.push(InstallWarning::UnknownPluginVersion {
                path: d.path.clone(),
                ours: d.ours.clone(),
            });
        }
    }
    let mut present = executables_in(&opts.bin_dir)?;
    present.extend(
        delegates
            .iter()
            .filter(|(d, _)| d.action == PluginAction::Create)
            .filter_map(|(d, _)| d.path.file_name()?.to_str().map(str::to_string)),
    );
    let missing = missing_plugins(present.iter().map(String::as_str));
    if !missing.is_empty() {
        warnings.push(InstallWarning::MissingPlugins {
            bin_dir: opts.bin_dir.clone(),
            missing,
        });
    }

    if !opts.dry_run {
        for dir in &created_dirs {
            create_dir(dir)?;
        }
        // The plugins first: the runtime may use the config as soon as it appears.
        for (d, bytes) in &delegates {
            let action = match d.action {
                PluginAction::FixMode => FileAction::FixMode,
                ref a if a.writes() => FileAction::Replace,
                _ => continue,
            };
            apply(&d.path, action, bytes, PLUGIN_MODE)?;
        }
        apply(&plugin_path, plugin_action, &plugin_bytes, PLUGIN_MODE)?;
        apply(
            &conflist_path,
            conflist_action,
            &conflist_bytes,
            CONFLIST_MODE,
        )?;
    }

    Ok(InstallReport {
        dry_run: opts.dry_run,
        created_dirs,
        delegates: delegates.into_iter().map(|(d, _)| d).collect(),
        plugin: FileChange {
            path: plugin_path,
            action: plugin_action,
            mode: PLUGIN_MODE,
        },
        conflist: FileChange {
            path: conflist_path,
            action: conflist_action,
            mode: CONFLIST_MODE,
        },
        warnings,
    })
}

/// Reads each delegate plugin from `dir`, asks it and the bin dir's copy for their versions
/// where that decides anything, and plans what to do; the bytes come along for applying.
fn plan_delegates(
    dir: &Path,
    opts: &InstallOptions,
) -> Result<Vec<(DelegateChange, Vec<u8>)>, InstallError> {
    let mut out = Vec::new();
    for name in COMPANION_PLUGINS {
        let src = dir.join(name);
        let bytes = read_source(&src).map_err(|reason| InstallError::DelegateSource {
            path: src.clone(),
            reason,
        })?;
        let dest = opts.bin_dir.join(name);
        let existing = existing_file(&dest, &bytes)?;
        let ours = plugins::probe_version(&src, name);
        let theirs = match existing {
            Existing::File {
                same_content: false,
                ..
            } => plugins::probe_version(&dest, name),
            _ => None,
        };
        let action = plugins::plan_plugin(
            existing,
            PLUGIN_MODE,
            theirs.as_ref(),
            ours.as_ref(),
            opts.replace_plugins,
        );
        out.push((
            DelegateChange {
                path: dest,
                action,
                ours: ours.map(|v: PluginVersion| v.text),
            },
            bytes,
        ));
    }
    Ok(out)
}

fn dir_fix(dir: &Path) -> String {
    format!(
        "make sure {} is a writable directory on the node (in a DaemonSet, mount the host directory as a hostPath volume, not read-only, and run the installer as root)",
        dir.display()
    )
}

fn read_plugin_source(path: &Path) -> Result<Vec<u8>, InstallError> {
    read_source(path).map_err(|reason| InstallError::PluginSource {
        path: path.to_path_buf(),
        reason,
    })
}

/// A non-empty regular file's bytes, or why not.
fn read_source(path: &Path) -> Result<Vec<u8>, String> {
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("it is not a regular file".to_string());
    }
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    if bytes.is_empty() {
        return Err("the file is empty".to_string());
    }
    Ok(bytes)
}

fn dir_exists(dir: &Path) -> Result<bool, InstallError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(_) => Err(InstallError::Io {
            action: "use",
            path: dir.to_path_buf(),
            source: io::Error::other("it exists but is not a directory"),
            fix: format!(
                "move the file away or point the installer at another directory ({})",
                dir_fix(dir)
            ),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(InstallError::Io {
            action: "look at",
            path: dir.to_path_buf(),
            source,
            fix: dir_fix(dir),
        }),
    }
}

fn create_dir(dir: &Path) -> Result<(), InstallError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| InstallError::Io {
            action: "create directory",
            path: dir.to_path_buf(),
            source,
            fix: dir_fix(dir.parent().unwrap_or(dir)),
        })
}

/// What is at `path` now, compared with `want`.
fn existing_file(path: &Path, want: &[u8]) -> Result<Existing, InstallError> {
    let io_err = |source| InstallError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
        fix: dir_fix(path.parent().unwrap_or(path)),
    };
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A dangling symlink is something there: it gets replaced.
            return Ok(match fs::symlink_metadata(path) {
                Ok(_) => Existing::Other,
                Err(_) => Existing::Missing,
            });
        }
        Err(e) => return Err(io_err(e)),
    };
    if meta.is_dir() {
        return Err(InstallError::Io {
            action: "replace",
            path: path.to_path_buf(),
            source: io::Error::other("it is a directory"),
            fix: "remove that directory; the installer writes a file there".to_string(),
        });
    }
    if !meta.is_file() {
        return Ok(Existing::Other);
    }
    // Only a file of the same length can have the same content.
    let same_content = usize::try_from(meta.len()).ok() == Some(want.len())
        && fs::read(path).map_err(io_err)? == want;
    Ok(Existing::File {
        same_content,
        mode: meta.permissions().mode(),
    })
}

/// Warnings for configs that sort before ours in `conf_dir` (missing dir: none).
fn shadow_warnings(conf_dir: &Path, ours: &str) -> Result<Vec<InstallWarning>, InstallError> {
    let entries = match fs::read_dir(conf_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(InstallError::Io {
                action: "list",
                path: conf_dir.to_path_buf(),
                source,
                fix: dir_fix(conf_dir),
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries.flatten() {
        // libcni skips directories only.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    Ok(
        configs_sorting_before(ours, names.iter().map(String::as_str))
            .into_iter()
            .map(|file| {
                let plugin = read_small(&conf_dir.join(&file))
                    .as_deref()
                    .and_then(config_plugin_type);
                InstallWarning::ShadowedBy {
                    conf_dir: conf_dir.to_path_buf(),
                    file,
                    ours: ours.to_string(),
                    plugin,
                }
            })
            .collect(),
    )
}

/// A config file's bytes, if it is readable and not absurdly large.
fn read_small(path: &Path) -> Option<Vec<u8>> {
    let meta = fs::metadata(path).ok()?;
    (meta.is_file() && meta.len() <= 1 << 20)
        .then(|| fs::read(path).ok())
        .flatten()
}

/// Names of the executable regular files (symlinks followed) in `dir` (missing dir: none).
fn executables_in(dir: &Path) -> Result<Vec<String>, InstallError> {
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(InstallError::Io {
                action: "list",
                path: dir.to_path_buf(),
                source,
                fix: dir_fix(dir),
            });
        }
    };
    Ok(entries
        .flatten()
        .filter(|e| {
            fs::metadata(e.path()).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect())
}

fn apply(path: &Path, action: FileAction, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    match action {
        FileAction::Unchanged => Ok(()),
        FileAction::FixMode => {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
                InstallError::Io {
                    action: "set the mode of",
                    path: path.to_path_buf(),
                    source,
                    fix: dir_fix(dir),
                }
            })
        }
        FileAction::Create | FileAction::Replace => {
            write_atomic(path, bytes, mode).map_err(|source| InstallError::Io {
                action: "write",
                path: path.to_path_buf(),
                source,
                fix: dir_fix(dir),
            })
        }
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory (fsync, exact mode,
/// rename, fsync of the directory). The temp name ends in digits, never in a config
/// extension, so a runtime listing the conf dir meanwhile does not load it.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.weft-tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        // The umask may have cleared bits at creation.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const KUBE_FLANNEL: &str = r#"{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;

    #[test]
    fn conflist_matches_golden_and_kube_flannel() {
        let bytes = render_conflist(DEFAULT_NETWORK_NAME, DEFAULT_CNI_VERSION);
        crate::test_support::assert_golden("10-flannel.conflist", &bytes);
        let got: Value = serde_json::from_slice(&bytes).unwrap();
        let want: Value = serde_json::from_str(KUBE_FLANNEL).unwrap();
        assert_eq!(got, want);
        // weft-cni itself accepts the flannel entry as the runtime would hand it over.
        let mut entry = got["plugins"][0].clone();
        entry["name"] = got["name"].clone();
        entry["cniVersion"] = got["cniVersion"].clone();
        let conf = crate::conf::NetConf::parse(entry.to_string().as_bytes()).unwrap();
        conf.validate().unwrap();
        crate::delegate::validate_delegate(conf.delegate.as_ref()).unwrap();
    }

    #[test]
    fn conflist_takes_name_and_version() {
        let v: Value = serde_json::from_slice(&render_conflist("weft", "1.0.0")).unwrap();
        assert_eq!(v["name"], "weft");
        assert_eq!(v["cniVersion"], "1.0.0");
    }

    #[test]
    fn config_names_by_extension() {
        for yes in ["10-aws.conflist", "99-x.conf", "a.json", ".hidden.conflist"] {
            assert!(is_network_config_name(yes), "{yes}");
        }
        for no in [
            "10-aws.conflist.bak",
            "x.cilium_bak",
            "README",
            ".10-flannel.conflist.weft-tmp-1-0",
            "conflist",
            "x.CONF",
        ] {
            assert!(!is_network_config_name(no), "{no}");
        }
    }

    #[test]
    fn what_sorts_before_ours() {
        let names = [
            "10-flannel.conflist",
            "10-aws.conflist",
            "99-loopback.conf",
            "05-cilium.conflist",
            "10-flannel.conf",
            "10-aws.conflist.bak",
            "00-notes.txt",
            "10-Zeta.json",
            "100-x.conf",
            "1-x.conf",
        ];
        assert_eq!(
            configs_sorting_before("10-flannel.conflist", names),
            // Byte order, not numeric: "100-" sorts after "10-", "1-" before it.
            [
                "05-cilium.conflist",
                "1-x.conf",
                "10-Zeta.json",
                "10-aws.conflist",
                "10-flannel.conf",
            ]
        );
        assert!(configs_sorting_before("00-weft.conflist", names).is_empty());
        assert!(configs_sorting_before("10-flannel.conflist", []).is_empty());
    }

    #[test]
    fn plugin_type_of_configs() {
        assert_eq!(
            config_plugin_type(KUBE_FLANNEL.as_bytes()).as_deref(),
            Some("flannel")
        );
        let aws = br#"{"cniVersion":"0.4.0","name":"aws-cni","disableCheck":true,"plugins":[{"name":"aws-cni","type":"aws-cni"},{"type":"egress-cni"},{"type":"portmap"}]}"#;
        assert_eq!(config_plugin_type(aws).as_deref(), Some("aws-cni"));
        assert_eq!(
            config_plugin_type(br#"{"name":"x","type":"bridge"}"#).as_deref(),
            Some("bridge")
        );
        for junk in [&b"not json"[..], b"{}", br#"{"plugins":[]}"#, b"[1]"] {
            assert_eq!(config_plugin_type(junk), None);
        }
    }

    #[test]
    fn missing_companions() {
        assert_eq!(
            missing_plugins(["bridge", "portmap", "flannel"]),
            ["host-local", "loopback"]
        );
        assert!(missing_plugins(COMPANION_PLUGINS.iter().copied()).is_empty());
    }

    #[test]
    fn file_plans() {
        let file = |same_content, mode| Existing::File { same_content, mode };
        assert_eq!(plan_file(Existing::Missing, 0o644), FileAction::Create);
        assert_eq!(plan_file(Existing::Other, 0o644), FileAction::Replace);
        assert_eq!(plan_file(file(false, 0o100644), 0o644), FileAction::Replace);
        assert_eq!(plan_file(file(true, 0o100600), 0o644), FileAction::FixMode);
        assert_eq!(
            plan_file(file(true, 0o100644), 0o644),
            FileAction::Unchanged
        );
    }

    #[test]
    fn options_are_checked() {
        let ok = InstallOptions::new("/x/weft-cni");
        ok.validate().unwrap();
        let cases: Vec<(InstallOptions, &str)> = vec![
            (InstallOptions::new(""), "weft-cni binary"),
            (
                InstallOptions {
                    conflist_name: "10-flannel.conf".into(),
                    ..ok.clone()
                },
                "must end in \".conflist\"",
            ),
            (
                InstallOptions {
                    conflist_name: "../x.conflist".into(),
                    ..ok.clone()
                },
                "not a file name",
            ),
            (
                InstallOptions {
                    cni_version: "0.5.0".into(),
                    ..ok.clone()
                },
                "0.3.1, 0.4.0",
            ),
            (
                InstallOptions {
                    network_name: "a b".into(),
                    ..ok.clone()
                },
                "network name",
            ),
        ];
        for (opts, needle) in cases {
            let msg = opts.validate().unwrap_err().to_string();
            assert!(msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn warnings_name_the_file_and_the_fix() {
        let aws = InstallWarning::ShadowedBy {
            conf_dir: "/etc/cni/net.d".into(),
            file: "10-aws.conflist".into(),
            ours: "10-flannel.conflist".into(),
            plugin: Some("aws-cni".into()),
        }
        .to_string();
        assert!(aws.contains("/etc/cni/net.d/10-aws.conflist"), "{aws}");
        assert!(
            aws.contains("the container runtime uses the first config in lexicographic order, so 10-aws.conflist wins and pods keep going to aws-cni (error E4"),
            "{aws}"
        );
        assert!(aws.contains("weft node cleanup-vpc-cni"), "{aws}");
        let other = InstallWarning::ShadowedBy {
            conf_dir: "/etc/cni/net.d".into(),
            file: "05-cilium.conflist".into(),
            ours: "10-flannel.conflist".into(),
            plugin: Some("cilium-cni".into()),
        }
        .to_string();
        assert!(
            other.contains("pods go to plugin \"cilium-cni\""),
            "{other}"
        );
        assert!(!other.contains("E4"), "{other}");
        let missing = InstallWarning::MissingPlugins {
            bin_dir: "/opt/cni/bin".into(),
            missing: vec!["bridge".into(), "portmap".into()],
        }
        .to_string();
        assert!(
            missing.starts_with("bridge, portmap missing from /opt/cni/bin"),
            "{missing}"
        );
        assert!(
            missing.contains("--plugins-dir") && missing.contains(DEFAULT_PLUGINS_DIR),
            "{missing}"
        );
        assert!(
            missing.contains("no bridge once aws-node is gone"),
            "{missing}"
        );
    }

    // Effects, in temp dirs (no root needed).

    struct Node {
        dir: tempfile::TempDir,
    }

    impl Node {
        fn new() -> Node {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("weft-cni"), b"\x7fELF pretend plugin v1").unwrap();
            Node { dir }
        }
        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }
        fn opts(&self) -> InstallOptions {
            InstallOptions {
                bin_dir: self.path("opt/cni/bin"),
                conf_dir: self.path("etc/cni/net.d"),
                ..InstallOptions::new(self.path("weft-cni"))
            }
        }
        fn companions(&self) {
            let bin = self.path("opt/cni/bin");
            fs::create_dir_all(&bin).unwrap();
            for p in COMPANION_PLUGINS {
                fs::write(bin.join(p), "#!/bin/sh\n").unwrap();
                fs::set_permissions(bin.join(p), fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        fn listing(&self, rel: &str) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.path(rel))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn first_install_creates_then_second_is_unchanged() {
        let node = Node::new();
        let opts = node.opts();
        let report = install(&opts).unwrap();
        assert!(!report.dry_run);
        assert_eq!(
            report.created_dirs,
            [node.path("opt/cni/bin"), node.path("etc/cni/net.d")]
        );
        assert_eq!(report.plugin.action, FileAction::Create);
        assert_eq!(report.conflist.action, FileAction::Create);
        assert!(report.changed());
        let plugin = node.path("opt/cni/bin/flannel");
        let conflist = node.path("etc/cni/net.d/10-flannel.conflist");
        assert_eq!(fs::read(&plugin).unwrap(), b"\x7fELF pretend plugin v1");
        assert_eq!(mode(&plugin), 0o755);
        assert_eq!(
            fs::read(&conflist).unwrap(),
            render_conflist("cbr0", "0.3.1")
        );
        assert_eq!(mode(&conflist), 0o644);
        // No temp files left behind.
        assert_eq!(node.listing("opt/cni/bin"), ["flannel"]);
        assert_eq!(node.listing("etc/cni/net.d"), ["10-flannel.conflist"]);
        // The companions are missing from this empty bin dir.
        assert_eq!(
            report.warnings,
            [InstallWarning::MissingPlugins {
                bin_dir: node.path("opt/cni/bin"),
                missing: COMPANION_PLUGINS.iter().map(|p| p.to_string()).collect(),
            }]
        );

        let mtimes = |p: &Path| fs::metadata(p).unwrap().modified().unwrap();
        let before = (mtimes(&plugin), mtimes(&conflist));
        let again = install(&opts).unwrap();
        assert!(!again.changed());
        assert!(again.created_dirs.is_empty());
        assert_eq!(again.plugin.action, FileAction::Unchanged);
        assert_eq!(again.conflist.action, FileAction::Unchanged);
        assert_eq!((mtimes(&plugin), mtimes(&conflist)), before);
        let text = again.to_string();
        assert!(
            text.contains(&format!("plugin {}: unchanged", plugin.display())),
            "{text}"
        );
        assert!(
            text.contains(&format!("config {}: unchanged", conflist.display())),
            "{text}"
        );
    }

    #[test]
    fn changed_content_is_replaced_and_wrong_mode_fixed() {
        let node = Node::new();
        node.companions();
        let opts = node.opts();
        install(&opts).unwrap();
        let plugin = node.path("opt/cni/bin/flannel");
        let conflist = node.path("etc/cni/net.d/10-flannel.conflist");

        // A new plugin build of the same length, and a hand-edited config.
        fs::write(node.path("weft-cni"), b"\x7fELF pretend plugin v2").unwrap();
        fs::write(&conflist, b"{\"name\":\"edited\"}").unwrap();
        let r = install(&opts).unwrap();
        assert_eq!(r.plugin.action, FileAction::Replace);
        assert_eq!(r.conflist.action, FileAction::Replace);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(fs::read(&plugin).unwrap(), b"\x7fELF pretend plugin v2");
        assert_eq!(
            fs::read(&conflist).unwrap(),
            render_conflist("cbr0", "0.3.1")
        );

        fs::set_permissions(&plugin, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(&conflist, fs::Permissions::from_mode(0o600)).unwrap();
        let r = install(&opts).unwrap();
        assert_eq!(r.plugin.action, FileAction::FixMode);
        assert_eq!(r.conflist.action, FileAction::FixMode);
        assert_eq!((mode(&plugin), mode(&conflist)), (0o755, 0o644));
        assert!(!install(&opts).unwrap().changed());
    }

    #[test]
    fn a_symlinked_plugin_is_replaced_by_a_file() {
        let node = Node::new();
        let opts = node.opts();
        fs::create_dir_all(&opts.bin_dir).unwrap();
        std::os::unix::fs::symlink("/nonexistent/flannel", opts.plugin_path()).unwrap();
        let r = install(&opts).unwrap();
        assert_eq!(r.plugin.action, FileAction::Replace);
        let meta = fs::symlink_metadata(opts.plugin_path()).unwrap();
        assert!(meta.file_type().is_file());
    }

    #[test]
    fn dry_run_changes_nothing() {
        let node = Node::new();
        let opts = InstallOptions {
            dry_run: true,
            ..node.opts()
        };
        let r = install(&opts).unwrap();
        assert!(r.dry_run && r.changed());
        assert_eq!(r.plugin.action, FileAction::Create);
        assert_eq!(r.conflist.action, FileAction::Create);
        assert!(!node.path("opt").exists() && !node.path("etc").exists());
        let text = r.to_string();
        assert!(text.starts_with("dry run: nothing was changed\n"), "{text}");
        assert!(text.contains("would create"), "{text}");

        // Installed for real, then a dry run with a stale config says "would replace".
        install(&node.opts()).unwrap();
        let conflist = opts.conflist_path();
        fs::write(&conflist, b"old").unwrap();
        let r = install(&opts).unwrap();
        assert_eq!(r.conflist.action, FileAction::Replace);
        assert_eq!(r.plugin.action, FileAction::Unchanged);
        assert_eq!(fs::read(&conflist).unwrap(), b"old");
        assert!(r.to_string().contains("would replace"), "{r}");
    }

    #[test]
    fn leftover_configs_that_sort_first_are_reported() {
        let node = Node::new();
        node.companions();
        let opts = node.opts();
        fs::create_dir_all(&opts.conf_dir).unwrap();
        let aws = br#"{"cniVersion":"0.4.0","name":"aws-cni","plugins":[{"name":"aws-cni","type":"aws-cni"},{"type":"egress-cni"},{"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}"#;
        fs::write(opts.conf_dir.join("10-aws.conflist"), aws).unwrap();
        fs::write(opts.conf_dir.join("10-aws.conflist.bak"), aws).unwrap();
        fs::write(opts.conf_dir.join("99-loopback.conf"), "{}").unwrap();
        fs::create_dir(opts.conf_dir.join("00-dir.conf")).unwrap();
        let r = install(&opts).unwrap();
        assert_eq!(
            r.warnings,
            [InstallWarning::ShadowedBy {
                conf_dir: opts.conf_dir.clone(),
                file: "10-aws.conflist".into(),
                ours: "10-flannel.conflist".into(),
                plugin: Some("aws-cni".into()),
            }]
        );
        let text = r.to_string();
        assert!(text.contains("warning: "), "{text}");
        assert!(text.contains("10-aws.conflist wins"), "{text}");
        // Installed all the same, and the warning stays until the file is gone.
        assert!(opts.conflist_path().is_file());
        assert_eq!(install(&opts).unwrap().warnings.len(), 1);
        fs::remove_file(opts.conf_dir.join("10-aws.conflist")).unwrap();
        assert!(install(&opts).unwrap().warnings.is_empty());
    }

    #[test]
    fn errors_name_the_path_and_the_fix() {
        let node = Node::new();
        let opts = InstallOptions {
            plugin_src: node.path("no-such-binary"),
            ..node.opts()
        };
        let msg = install(&opts).unwrap_err().to_string();
        assert!(msg.contains(&node.path("no-such-binary").display().to_string()));
        assert!(msg.contains("cargo build --release -p weft-cni"), "{msg}");

        // The bin dir is a file.
        fs::create_dir_all(node.path("opt/cni")).unwrap();
        fs::write(node.path("opt/cni/bin"), "").unwrap();
        let err = install(&node.opts()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&node.path("opt/cni/bin").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("not a directory"), "{msg}");
        assert!(
            !node.path("etc").exists(),
            "nothing is written after a failed check"
        );

        // A directory where the conflist should go.
        fs::remove_file(node.path("opt/cni/bin")).unwrap();
        fs::create_dir_all(node.path("etc/cni/net.d/10-flannel.conflist")).unwrap();
        let msg = install(&node.opts()).unwrap_err().to_string();
        assert!(msg.contains("10-flannel.conflist"), "{msg}");
        assert!(msg.contains("remove that directory"), "{msg}");
    }

    #[test]
    fn unwritable_dir_is_an_io_error_naming_it() {
        // Root ignores permission bits, so make the conf dir's parent a file instead.
        let node = Node::new();
        fs::write(node.path("etc"), "").unwrap();
        let err = install(&node.opts()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, InstallError::Io { .. }), "{msg}");
        assert!(
            msg.contains(&node.path("etc").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("writable directory"), "{msg}");
    }
}
