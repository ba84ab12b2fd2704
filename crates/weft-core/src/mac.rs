//! Ethernet (VTEP) MAC addresses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit Ethernet address, such as the VTEP MAC of a `flannel.<VNI>` device.
///
/// Displays in the lowercase colon form flannel writes into lease `BackendData`
/// (`aa:bb:cc:dd:ee:01`) and serializes as that string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct MacAddr(pub [u8; 6]);

/// A MAC address text that is not in colon form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address {text:?}: {reason}; expected six two-digit hex groups separated by colons, such as \"aa:bb:cc:dd:ee:01\""
)]
pub struct MacParseError {
    /// The rejected text.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl MacAddr {
    /// A random unicast, locally administered address, made the way flannel makes VTEP MACs
    /// (pkg/mac): six random bytes, then the multicast bit cleared and the local bit set.
    pub fn random_local(rng: &mut impl rand::Rng) -> MacAddr {
        let mut bytes = [0u8; 6];
        rng.fill_bytes(&mut bytes);
        bytes[0] = (bytes[0] & 0xfe) | 0x02;
        MacAddr(bytes)
    }

    /// True for a unicast, locally administered address (what [`MacAddr::random_local`] makes).
    pub fn is_unicast_local(&self) -> bool {
        self.0[0] & 0x03 == 0x02
    }

    /// True when the group bit is set (multicast and broadcast addresses).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 == 0x01
    }

    /// True for `00:00:00:00:00:00`.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// True for `ff:ff:ff:ff:ff:ff`.
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }

    /// The six bytes.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(bytes: [u8; 6]) -> Self {
        MacAddr(bytes)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| MacParseError {
            text: text.to_owned(),
            reason,
        };
        let mut bytes = [0u8; 6];
        let mut groups = text.split(':');
        for byte in bytes.iter_mut() {
            let group = groups.next().ok_or_else(|| fail("fewer than six groups"))?;
            if group.len() != 2 || !group.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(fail("each group must be exactly two hex digits"));
            }
            *byte = u8::from_str_radix(group, 16).map_err(|_| fail("not hexadecimal"))?;
        }
        if groups.next().is_some() {
            return Err(fail("more than six groups"));
        }
        Ok(MacAddr(bytes))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn display_is_lowercase_colon_form() {
        let mac = MacAddr([0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44]);
        assert_eq!(mac.to_string(), "c6:d2:32:6f:8f:44");
    }

    #[test]
    fn parses_either_case() {
        let want = MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01]);
        assert_eq!("aa:bb:cc:dd:ee:01".parse::<MacAddr>().unwrap(), want);
        assert_eq!("AA:BB:CC:DD:EE:01".parse::<MacAddr>().unwrap(), want);
    }

    #[test]
    fn rejects_bad_text_with_a_helpful_message() {
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:01:02",
            "aa-bb-cc-dd-ee-01",
            "a:bb:cc:dd:ee:01",
            "gg:bb:cc:dd:ee:01",
            "+a:bb:cc:dd:ee:01",
            "aa:bb:cc:dd:ee:01:",
            "aabb.ccdd.ee01",
        ] {
            let err = bad.parse::<MacAddr>().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("aa:bb:cc:dd:ee:01"), "{msg}");
        }
    }

    #[test]
    fn random_local_is_unicast_and_local() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let mac = MacAddr::random_local(&mut rng);
            assert!(mac.is_unicast_local());
            assert!(!mac.is_multicast());
        }
    }

    #[test]
    fn serde_round_trip() {
        let mac = MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01]);
        let text = serde_json::to_string(&mac).unwrap();
        assert_eq!(text, r#""aa:bb:cc:dd:ee:01""#);
        assert_eq!(serde_json::from_str::<MacAddr>(&text).unwrap(), mac);
        assert!(serde_json::from_str::<MacAddr>(r#""nope""#).is_err());
    }

    #[test]
    fn predicates() {
        assert!(MacAddr([0; 6]).is_zero());
        assert!(MacAddr([0xff; 6]).is_broadcast());
        assert!(MacAddr([0xff; 6]).is_multicast());
        assert!(MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!MacAddr([0x00, 0x11, 0x22, 0, 0, 1]).is_unicast_local());
    }
}
