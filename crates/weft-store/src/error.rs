//! The store's errors, and how an etcd-client error is classified (transport, leader
//! election, compaction, size limit).

use std::path::PathBuf;

/// A store failure, naming what was being done and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // The causes below are written into the message (followed by what to do), so they are
    // not also returned as `source()`: printed as a chain they would appear twice.
    #[error("cannot read {what} {path}: {cause}; check --{flag}")]
    File {
        what: &'static str,
        flag: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
    #[error(
        "cannot connect to etcd at {endpoints}: {cause}; {}",
        hint.as_deref().unwrap_or("check that etcd is running and reachable and that --etcd-endpoints is right")
    )]
    Connect {
        endpoints: String,
        cause: etcd_client::Error,
        /// What the TLS setup says about the failure, if anything.
        hint: Option<String>,
    },
    #[error("etcd request failed ({what}): {cause}{}", hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default())]
    Request {
        what: String,
        cause: etcd_client::Error,
        /// What the TLS setup says about the failure, if anything.
        hint: Option<String>,
    },
    #[error("etcd watch on {prefix} was cancelled: {reason}")]
    WatchCancelled { prefix: String, reason: String },
    #[error("{0}")]
    BadKey(String),
}

impl StoreError {
    /// Whether etcd's answer was larger than gRPC's message limit (the watch then has to
    /// be replaced by a paged listing).
    pub fn is_too_large(&self) -> bool {
        matches!(self, StoreError::Request { cause, .. } if too_large(cause))
    }

    /// Whether the revision asked for was compacted away.
    pub fn is_compacted(&self) -> bool {
        matches!(self, StoreError::Request { cause, .. } if compacted(cause))
    }
}

/// gRPC's limit on a message weft receives: tonic's default (4 MiB), which etcd-client keeps.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Keys asked for in one page of a listing at most.
pub(crate) const PAGE_KEYS: i64 = 1000;

/// Bytes a page of a listing aims at: a quarter of [`MAX_MESSAGE_BYTES`], so a page stays
/// well under the limit while its values keep their size.
pub(crate) const PAGE_BYTES: usize = MAX_MESSAGE_BYTES / 4;

/// Whether a response was refused for exceeding gRPC's message size limit (tonic's
/// "decoded message length too large", code OutOfRange).
pub(crate) fn too_large(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(st) => st.message().contains("message length too large"),
        _ => false,
    }
}

/// etcd's ErrCompacted: the revision asked for is older than the last compaction.
pub(crate) fn compacted(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(st) => st.message().contains("has been compacted"),
        _ => false,
    }
}

/// The end of the key range holding every key that starts with `prefix` (etcd's prefix
/// range end: the last byte incremented, trailing 0xff dropped).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Whether a request failed below gRPC (connect, TLS, connection lost), not with an etcd status.
pub(crate) fn is_transport(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(st) => std::error::Error::source(st).is_some(),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// Whether etcd refused a request because it is between leaders ("leader changed", "no
/// leader"): transient, and for a read, safe to send again.
pub(crate) fn electing(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(st) => {
            // etcd's ErrGRPCLeaderChanged / ErrGRPCNoLeader (code Unavailable); tonic is not a
            // direct dependency, so the message is what identifies them.
            st.message().contains("etcdserver: leader changed")
                || st.message().contains("etcdserver: no leader")
        }
        _ => false,
    }
}

/// Whether a request failed before any etcd member got it: the balanced channel handed it to
/// an endpoint it could not connect to (a dead member refuses, an unreachable one has no
/// route). Sending it again, which reaches another endpoint, cannot apply it twice, so this
/// is safe to retry for writes too.
pub(crate) fn never_sent(e: &etcd_client::Error) -> bool {
    use std::io::ErrorKind::*;
    let etcd_client::Error::GRpcStatus(st) = e else {
        return false;
    };
    let mut cur = std::error::Error::source(st);
    while let Some(x) = cur {
        if let Some(io) = x.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
            )
        {
            return true;
        }
        cur = x.source();
    }
    false
}
