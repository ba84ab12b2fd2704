//! weft-cni: a CNI plugin of type `flannel`, a drop-in for flannel's plugin.
//!
//! It reads the node's subnet lease from subnet.env (written by weftd or flanneld), renders a
//! delegate config (bridge + host-local by default) with flannel's exact rules, saves it per
//! container and runs the delegate found in CNI_PATH, passing its result through. DEL and
//! CHECK replay the saved config.
//!
//! Modules: [`conf`] (the input config), [`subnet`] (subnet.env), [`delegate`] (the pure
//! delegate config builder), [`state`] (saved configs), [`invoke`] (running plugins),
//! [`mod@env`] (the CNI_* variables), [`version`], [`error`], [`plugin`] (the verbs),
//! [`lock`] (one ADD/DEL/CHECK at a time per container), and [`install`] (putting the plugin
//! and its conflist on a node).
//!
//! Where weft-cni deliberately differs from flannel's plugin:
//! - DEL removes the saved config only when the delegate DEL succeeded (flannel removes it
//!   either way), so the runtime's retry can still release the IP.
//! - A failed delegate ADD is undone: the delegate is asked to DEL and the saved config is
//!   removed (kept if that DEL fails too, for the runtime's DEL).
//! - CHECK (spec 0.4.0 and later) runs the delegate's CHECK with the saved config and the
//!   runtime's `prevResult`; flannel's CHECK does nothing. For the bridge plugin the routes of
//!   `prevResult` get their gateway filled in ([`plugin::fill_route_gateways`]).
//! - A missing subnet.env is CNI code 11 (try again later); config errors are reported
//!   before subnet.env is read; STATUS and GC (spec 1.1.0) are answered.
//! - The delegate's result is passed through byte for byte (flannel re-encodes it).
//! - The saved config replaces the old one atomically (temp file + rename; flannel writes
//!   in place). Like flannel's, it is not fsynced: [`state`] says why that is safe.
//! - ADD, DEL and CHECK for one container are serialized ([`lock`]); stdin is capped at
//!   [`MAX_STDIN`]; container IDs must follow the CNI spec's rule
//!   ([`env::validate_container_id`]). flannel's plugin does none of these.
//! - `FLANNEL_IPMASQ` must be a Go boolean (`true`, `false`, `1`, `0`, ...); flannel treats
//!   anything but `true` as false. subnet.env parsing is weft-core's, with the comma lists of
//!   `FLANNEL_NETWORK` / `FLANNEL_IPV6_NETWORK` handled in [`subnet`].

pub mod conf;
pub mod delegate;
pub mod env;
pub mod error;
pub mod install;
pub mod invoke;
pub mod json;
pub mod lock;
pub mod plugin;
pub mod state;
pub mod subnet;
pub mod version;

pub use error::{Error, Response};
pub use plugin::{execute, run};

/// The most stdin weft-cni reads: 1 MiB. A network config is a few KiB; more is refused with
/// [`Error::StdinTooLarge`] instead of being read into memory.
pub const MAX_STDIN: usize = 1 << 20;

/// Reads the network config from `input`, at most [`MAX_STDIN`] bytes.
pub fn read_stdin(input: impl std::io::Read) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let mut buf = Vec::new();
    input
        .take(MAX_STDIN as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|source| Error::ReadStdin { source })?;
    if buf.len() > MAX_STDIN {
        return Err(Error::StdinTooLarge { limit: MAX_STDIN });
    }
    Ok(buf)
}

#[cfg(test)]
mod stdin_tests {
    use super::*;

    #[test]
    fn stdin_up_to_the_limit_is_read_and_beyond_is_refused() {
        let exact = vec![b' '; MAX_STDIN];
        assert_eq!(read_stdin(&exact[..]).unwrap().len(), MAX_STDIN);
        let over = vec![b' '; MAX_STDIN + 1];
        let err = read_stdin(&over[..]).unwrap_err();
        assert_eq!(err.code(), 7);
        assert!(
            err.to_string().contains("larger than 1048576 bytes"),
            "{err}"
        );
        // An endless stream is cut at the limit, not read to the end.
        let err = read_stdin(std::io::repeat(b'x')).unwrap_err();
        assert!(matches!(err, Error::StdinTooLarge { .. }), "{err}");
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    /// Compares `actual` with `tests/golden/<name>` (expect-test; `UPDATE_EXPECT=1` rewrites
    /// the file instead: review the diff before committing it).
    pub fn assert_golden(name: &str, actual: &[u8]) {
        let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
        let actual = std::str::from_utf8(actual).expect("golden outputs are UTF-8 text");
        expect_test::expect_file![path].assert_eq(actual);
    }
}
