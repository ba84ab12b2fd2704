//! weft-deploy's one error type. Every renderer checks its inputs before it renders, so what
//! can go wrong is an input (a flag, a pasted document, a CA in --out-dir), named with what is
//! wrong and how to fix it, or the generation of a key or certificate.

/// Why a renderer did not render.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or input that cannot be used: the message names it, says what is wrong and
    /// how to fix it.
    #[error("{0}")]
    Input(String),
    /// The etcd PKI could not generate a key or a certificate.
    #[error("cannot generate {what}: {message}")]
    Generate { what: &'static str, message: String },
    /// The `--etcd-endpoints` value (weft-store's parser, weftd's own).
    #[error(transparent)]
    Endpoints(#[from] weft_store::EndpointError),
    /// The same, read from the environment or a flag (its message says which).
    #[error(transparent)]
    EndpointsFlag(#[from] weft_store::EndpointsFlagError),
    /// A document weft-deploy serialized itself (cannot happen for its own types).
    #[error("cannot serialize {what}: {message}")]
    Serialize { what: &'static str, message: String },
}

/// weft-deploy's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Error::Input` from a format string.
macro_rules! input {
    ($($arg:tt)*) => {
        $crate::error::Error::Input(format!($($arg)*))
    };
}

/// Returns `Error::Input` from a format string.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::input!($($arg)*))
    };
}

pub(crate) use {bail, input};
