//! The cluster's certificates (rcgen, ECDSA P-256): one CA, per member a server and a peer
//! cert, and one client cert for weftd and weft.
//!
//! Server and peer certs carry the member's private IP and name as SANs and both the
//! serverAuth and clientAuth usages (etcd dials itself and its peers with them). The client
//! cert's CN is the etcd user it maps to when etcd auth is enabled without passwords.

use std::net::{IpAddr, Ipv4Addr};

use crate::error::{Error, Result, bail, input as anyhow};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Years a new CA is valid.
pub const CA_YEARS: i32 = 10;
/// Years a member or client cert is valid (at most until the CA expires).
pub const LEAF_YEARS: i32 = 5;
/// CN (and so the etcd user name) of the client cert.
pub const CLIENT_CN: &str = "weft";

/// A calendar day (UTC): the `time` crate's date, with the few steps the PKI needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Day(pub time::Date);

impl std::fmt::Display for Day {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // time's Display of a Date is ISO 8601: 2026-03-01.
        self.0.fmt(f)
    }
}

impl Day {
    /// Today (UTC) from the system clock.
    pub fn today() -> Day {
        Day(time::OffsetDateTime::now_utc().date())
    }

    /// The day `year-month-day`; None when there is no such day.
    pub fn ymd(year: i32, month: u8, day: u8) -> Option<Day> {
        let month = time::Month::try_from(month).ok()?;
        time::Date::from_calendar_date(year, month, day)
            .ok()
            .map(Day)
    }

    /// The same day `n` years later (Feb 29 becomes Feb 28 in a year that has none).
    pub fn plus_years(self, n: i32) -> Day {
        let year = self.0.year().saturating_add(n);
        let day = self.0.day().min(self.0.month().length(year));
        time::Date::from_calendar_date(year, self.0.month(), day)
            .map(Day)
            .unwrap_or(Day(time::Date::MAX))
    }

    /// The day before.
    pub fn minus_one(self) -> Day {
        Day(self.0.previous_day().unwrap_or(self.0))
    }

    /// Midnight (UTC) at the start of the day, as certificates carry it.
    fn start(self) -> time::OffsetDateTime {
        self.0.midnight().assume_utc()
    }
}

/// A cert and its key, PEM.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// The CA that signs everything.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub key_pem: String,
    /// Last day the CA is valid.
    pub not_after: Day,
}

/// What a leaf cert is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// etcd's client-facing cert (`--cert-file`).
    Server,
    /// etcd's peer cert (`--peer-cert-file`).
    Peer,
    /// weftd's and weft's cert (`--etcd-certfile`).
    Client,
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, "weft");
    d.push(DnType::CommonName, common_name);
    d
}

fn gen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |e| Error::Generate {
        what,
        message: e.to_string(),
    }
}

/// A new CA valid from yesterday for [`CA_YEARS`] years.
pub fn new_ca(today: Day) -> Result<Ca> {
    new_ca_named("weft etcd CA", today)
}

/// [`new_ca`] with another common name (the testbed's throw-away CAs use it too).
pub fn new_ca_named(common_name: &str, today: Day) -> Result<Ca> {
    let not_after = today.plus_years(CA_YEARS);
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut p, today.minus_one(), not_after);
    let key = KeyPair::generate().map_err(gen_err("the CA key"))?;
    let cert = p.self_signed(&key).map_err(gen_err("the CA certificate"))?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(p, key),
        not_after,
    })
}

fn set_validity(p: &mut CertificateParams, from: Day, to: Day) {
    p.not_before = from.start();
    p.not_after = to.start();
}

/// The DER bodies of the `label` blocks of a PEM text (x509-parser's PEM reader; a block
/// that is not valid base64 is skipped, and reading stops at the first malformed one).
pub fn pem_blocks(text: &str, label: &str) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(text.as_bytes())
        .map_while(Result::ok)
        .filter(|p| p.label == label)
        .map(|p| p.contents)
        .collect()
}

/// Loads an existing CA (`ca.crt`/`ca.key` named by `cert_name`/`key_name` in errors) and
/// checks that it is a CA, that the key belongs to it and that it has not expired.
pub fn load_ca(
    cert_pem: &str,
    key_pem: &str,
    cert_name: &str,
    key_name: &str,
    today: Day,
) -> Result<Ca> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| {
        anyhow!("{key_name} is not a PEM private key weft can use ({e}); restore the CA key that belongs to {cert_name}, or use a new --out-dir for a new CA")
    })?;
    let der = pem_blocks(cert_pem, "CERTIFICATE")
        .into_iter()
        .next()
        .ok_or_else(|| {
            anyhow!("{cert_name} holds no PEM certificate; restore it, or use a new --out-dir for a new CA")
        })?;
    let not_after = not_after(&der).ok_or_else(|| {
        anyhow!("{cert_name} is not an X.509 certificate weft can read; restore it, or use a new --out-dir for a new CA")
    })?;
    let public = key.public_key_raw();
    if public.is_empty() || !der.windows(public.len()).any(|w| w == public) {
        bail!(
            "{key_name} is not the private key of {cert_name}; restore the matching pair, or use a new --out-dir for a new CA"
        );
    }
    if not_after <= today {
        bail!(
            "the CA in {cert_name} expired on {not_after}; use a new --out-dir to create a new CA (and hand the new ca.crt and client cert to every etcd member and node)"
        );
    }
    let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| {
        anyhow!("{cert_name} cannot be used as an issuer ({e}); use a new --out-dir for a new CA")
    })?;
    if !issuer.key_usages().contains(&KeyUsagePurpose::KeyCertSign) {
        bail!(
            "{cert_name} is not a CA certificate (it may not sign certificates); put the cluster CA there, or use a new --out-dir for a new CA"
        );
    }
    Ok(Ca {
        issuer,
        cert_pem: cert_pem.to_string(),
        key_pem: key_pem.to_string(),
        not_after,
    })
}

/// The notAfter day (UTC) of a DER certificate; None if it is not an X.509 certificate.
pub fn not_after(der: &[u8]) -> Option<Day> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let t = cert.validity().not_after.to_datetime();
    Some(Day(t.to_offset(time::UtcOffset::UTC).date()))
}

impl Ca {
    /// The last day a leaf issued today can be valid: [`LEAF_YEARS`] on, or the CA's end.
    pub fn leaf_not_after(&self, today: Day) -> Day {
        today.plus_years(LEAF_YEARS).min(self.not_after)
    }

    /// Issues a cert with a fresh key: SANs `ips` and `dns_names`, usages for `role`, valid
    /// from yesterday to [`Ca::leaf_not_after`].
    pub fn issue(
        &self,
        common_name: &str,
        ips: &[Ipv4Addr],
        dns_names: &[String],
        role: Role,
        today: Day,
    ) -> Result<Pem> {
        let ips: Vec<IpAddr> = ips.iter().map(|ip| IpAddr::V4(*ip)).collect();
        self.issue_leaf(&Leaf {
            common_name,
            ips: &ips,
            dns_names,
            server_auth: matches!(role, Role::Server | Role::Peer),
            client_auth: true,
            valid: (today.minus_one(), self.leaf_not_after(today)),
        })
    }

    /// Issues a cert with a fresh key as `leaf` describes it.
    pub fn issue_leaf(&self, leaf: &Leaf<'_>) -> Result<Pem> {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(leaf.common_name);
        p.subject_alt_names = leaf.ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        for d in leaf.dns_names {
            let name = d
                .clone()
                .try_into()
                .map_err(|e| anyhow!("{d:?} cannot be a DNS name in a certificate: {e}"))?;
            p.subject_alt_names.push(SanType::DnsName(name));
        }
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if leaf.server_auth {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if leaf.client_auth {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        p.use_authority_key_identifier_extension = true;
        set_validity(&mut p, leaf.valid.0, leaf.valid.1);
        let key = KeyPair::generate().map_err(gen_err("a key"))?;
        let cert = p
            .signed_by(&key, &self.issuer)
            .map_err(gen_err("a certificate"))?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// A leaf certificate to issue.
#[derive(Debug, Clone)]
pub struct Leaf<'a> {
    pub common_name: &'a str,
    pub ips: &'a [IpAddr],
    pub dns_names: &'a [String],
    /// Extended key usage serverAuth.
    pub server_auth: bool,
    /// Extended key usage clientAuth.
    pub client_auth: bool,
    /// notBefore and notAfter (midnight UTC).
    pub valid: (Day, Day),
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: Day = Day(
        match time::Date::from_calendar_date(2026, time::Month::March, 1) {
            Ok(d) => d,
            Err(_) => panic!("not a date"),
        },
    );

    #[test]
    fn calendar_steps() {
        let leap = Day::ymd(2028, 2, 29).unwrap();
        assert_eq!(leap.plus_years(5).to_string(), "2033-02-28");
        assert_eq!(leap.plus_years(4).to_string(), "2032-02-29");
        assert_eq!(TODAY.minus_one().to_string(), "2026-02-28");
        assert_eq!(
            Day::ymd(2026, 1, 1).unwrap().minus_one().to_string(),
            "2025-12-31"
        );
        assert_eq!(
            Day::ymd(2024, 3, 1).unwrap().minus_one().to_string(),
            "2024-02-29"
        );
        assert!(Day::ymd(2026, 2, 29).is_none() && Day::ymd(2026, 13, 1).is_none());
        assert!(Day::today().0.year() >= 2025);
    }

    #[test]
    fn ca_issues_and_reloads() {
        let ca = new_ca(TODAY).unwrap();
        assert_eq!(ca.not_after.to_string(), "2036-03-01");
        assert_eq!(ca.leaf_not_after(TODAY).to_string(), "2031-03-01");
        let ip: Ipv4Addr = "10.0.1.10".parse().unwrap();
        let leaf = ca
            .issue("etcd0", &[ip], &["etcd0".into()], Role::Server, TODAY)
            .unwrap();
        assert_eq!(pem_blocks(&leaf.cert, "CERTIFICATE").len(), 1);
        assert!(leaf.key.contains("PRIVATE KEY"));

        let again = load_ca(&ca.cert_pem, &ca.key_pem, "ca.crt", "ca.key", TODAY).unwrap();
        assert_eq!(again.not_after, ca.not_after);
        again.issue("weft", &[], &[], Role::Client, TODAY).unwrap();
    }

    #[test]
    fn load_ca_names_the_problem() {
        let ca = new_ca(TODAY).unwrap();
        let other = new_ca(TODAY).unwrap();
        let err = |c: &str, k: &str, today| {
            load_ca(c, k, "ca.crt", "ca.key", today)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let e = err(&ca.cert_pem, &other.key_pem, TODAY);
        assert!(e.contains("ca.key is not the private key of ca.crt"), "{e}");
        let e = err(&ca.cert_pem, "junk", TODAY);
        assert!(e.contains("ca.key is not a PEM private key"), "{e}");
        let e = err("junk", &ca.key_pem, TODAY);
        assert!(e.contains("ca.crt holds no PEM certificate"), "{e}");
        let leaf = ca.issue("weft", &[], &[], Role::Client, TODAY).unwrap();
        let e = err(&leaf.cert, &leaf.key, TODAY);
        assert!(e.contains("not a CA certificate"), "{e}");
        assert_eq!(
            not_after(&pem_blocks(&leaf.cert, "CERTIFICATE")[0]),
            Some(TODAY.plus_years(LEAF_YEARS))
        );
        let e = err(&ca.cert_pem, &ca.key_pem, TODAY.plus_years(11));
        assert!(e.contains("expired on 2036-03-01"), "{e}");
    }
}
