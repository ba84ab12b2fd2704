//! TLS pre-flight: the PEM files checked before any connection, and TLS failures explained.

use std::path::{Path, PathBuf};

use crate::*;

/// The TLS files a store was built with, to explain TLS failures.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsFiles {
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
}

impl TlsFiles {
    pub(crate) fn of(cfg: &StoreConfig) -> Option<TlsFiles> {
        (cfg.ca_file.is_some() || cfg.cert_file.is_some()).then(|| TlsFiles {
            ca: cfg.ca_file.clone(),
            cert: cfg.cert_file.clone(),
        })
    }

    /// Why a request over TLS failed, in terms of the flags, or None when the failure does
    /// not look like a TLS problem (etcd down, refused, an etcd error status).
    pub(crate) fn hint(&self, e: &etcd_client::Error) -> Option<String> {
        use rustls::{CertificateError, Error as TlsError};
        let mut transport = matches!(
            e,
            etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_)
        );
        // etcd_client::Error has no source(): start below it.
        let mut cur: Option<&(dyn std::error::Error + 'static)> = match e {
            etcd_client::Error::GRpcStatus(st) => {
                transport |= std::error::Error::source(st).is_some();
                Some(st)
            }
            etcd_client::Error::TransportError(t) => Some(t),
            etcd_client::Error::IoError(io) => Some(io),
            other => Some(other),
        };
        let mut found: Option<TlsError> = None;
        while let Some(x) = cur {
            if let Some(r) = x.downcast_ref::<TlsError>() {
                found = Some(r.clone());
                break;
            }
            if let Some(io) = x.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::*;
                if matches!(
                    io.kind(),
                    ConnectionRefused
                        | TimedOut
                        | HostUnreachable
                        | NetworkUnreachable
                        | AddrNotAvailable
                ) {
                    return None; // reachability, not TLS
                }
                if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<TlsError>()) {
                    found = Some(r.clone());
                    break;
                }
            }
            cur = x.source();
        }
        let ca = self
            .ca
            .as_ref()
            .map(|p| format!("the CA in --etcd-cafile {}", p.display()))
            .unwrap_or_else(|| "any CA weft was given (no --etcd-cafile)".into());
        match found {
            Some(TlsError::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            )) => Some(format!(
                "etcd's server certificate is not signed by {ca}: pass the CA that signed etcd's --cert-file (for `weft etcd ignition`, ca.crt of its --out-dir)"
            )),
            Some(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Some(
                "etcd's server certificate does not name the address in --etcd-endpoints: use an address among the certificate's SANs, or reissue it with this address".into(),
            ),
            Some(TlsError::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) => Some("etcd's server certificate has expired: renew the members' certificates".into()),
            Some(other) => Some(self.rejected(&format!("TLS error: {other}"))),
            None if transport => Some(self.rejected("etcd closed the TLS connection")),
            None => None,
        }
    }

    fn rejected(&self, what: &str) -> String {
        match &self.cert {
            None => format!(
                "{what}; if this repeats, etcd runs with --client-cert-auth and needs a client certificate: pass --etcd-certfile and --etcd-keyfile"
            ),
            Some(c) => format!(
                "{what}; if this repeats, etcd rejects the client certificate --etcd-certfile {} (not signed by the CA in etcd's --trusted-ca-file, or revoked): etcd's log says why (\"rejected connection\")",
                c.display()
            ),
        }
    }
}

/// A PEM file as given on the command line: its path and its bytes.
type PemFile<'a> = (&'a Path, &'a [u8]);

/// Checks TLS material before any connection: PEM that parses, a key that belongs to the
/// cert, a client cert inside its validity period. These are mistakes in the files, so they
/// are reported as [`StoreError::Tls`] (fatal for weftd) naming the flag, the file and the fix.
pub(crate) fn check_tls_files(
    ca: Option<PemFile<'_>>,
    pair: Option<(PemFile<'_>, PemFile<'_>)>,
) -> Result<(), StoreError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
    if let Some((path, pem)) = ca
        && CertificateDer::pem_slice_iter(pem)
            .filter_map(Result::ok)
            .next()
            .is_none()
    {
        return Err(StoreError::Tls(format!(
            "--etcd-cafile {} holds no PEM certificate; pass the CA certificate (PEM) that signed etcd's server certificate",
            path.display()
        )));
    }
    let Some(((cert_path, cert_pem), (key_path, key_pem))) = pair else {
        return Ok(());
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    let Some(leaf) = certs.first().cloned() else {
        return Err(StoreError::Tls(format!(
            "--etcd-certfile {} holds no PEM certificate; pass the client certificate (PEM) whose key is --etcd-keyfile",
            cert_path.display()
        )));
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
        StoreError::Tls(format!(
            "--etcd-keyfile {} holds no PEM private key (PKCS#8, SEC1 or PKCS#1); pass the private key of --etcd-certfile {}",
            key_path.display(),
            cert_path.display()
        ))
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signer = provider.key_provider.load_private_key(key).map_err(|e| {
        StoreError::Tls(format!(
            "--etcd-keyfile {}: unusable private key ({e}); pass the private key of --etcd-certfile {}",
            key_path.display(),
            cert_path.display()
        ))
    })?;
    if rustls::sign::CertifiedKey::new(certs, signer)
        .keys_match()
        .is_err()
    {
        return Err(StoreError::Tls(format!(
            "--etcd-keyfile {} is not the private key of --etcd-certfile {}; pass the key that was issued with that certificate (e.g. client.key with client.crt)",
            key_path.display(),
            cert_path.display()
        )));
    }
    if let Ok(ee) = webpki::EndEntityCert::try_from(&leaf) {
        match ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[],
            &[],
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        ) {
            Err(webpki::Error::CertExpired { not_after, .. }) => {
                return Err(StoreError::Tls(format!(
                    "--etcd-certfile {} expired (not after {} s since 1970, UTC); issue a new client certificate from etcd's CA (`weft etcd ignition` with the same --out-dir renews it) and restart",
                    cert_path.display(),
                    not_after.as_secs()
                )));
            }
            Err(webpki::Error::CertNotValidYet { not_before, .. }) => {
                return Err(StoreError::Tls(format!(
                    "--etcd-certfile {} is not valid before {} s since 1970 (UTC); check this machine's clock",
                    cert_path.display(),
                    not_before.as_secs()
                )));
            }
            _ => {}
        }
    }
    Ok(())
}
