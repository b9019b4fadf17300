//! Credentials: short-term and long-term keys (RFC 8489 §9), password
//! preparation, USERHASH, and the MAC and CRC computations.

use std::borrow::Cow;
use std::fmt;

use hmac::{Hmac, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::attr::PasswordAlgorithm;

/// Why a password or other credential string cannot be prepared.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The string has code points that neither OpaqueString (RFC 8265) nor
    /// SASLprep (RFC 4013) accept.
    #[error("the string has characters that OpaqueString and SASLprep both prohibit")]
    Prohibited,
    /// A long-term key was asked for with an algorithm this crate lacks.
    #[error("password algorithm 0x{0:04x} is not supported")]
    UnsupportedAlgorithm(u16),
}

/// Prepare a password (or realm) with the OpaqueString profile of RFC 8265, as
/// RFC 8489 §9.2.2 requires. Strings OpaqueString rejects are prepared with its
/// predecessor SASLprep (RFC 4013), which RFC 5389 peers and the RFC 5769 test
/// vectors use; only strings both reject are an error.
pub fn prepare(s: &str) -> Result<Cow<'_, str>, CredentialError> {
    use precis_profiles::precis_core::profile::PrecisFastInvocation;
    if s.is_ascii() && s.bytes().all(|b| (0x21..0x7f).contains(&b) || b == b' ') {
        // Printable ASCII is left unchanged by both profiles.
        return Ok(Cow::Borrowed(s));
    }
    match precis_profiles::OpaqueString::enforce(s) {
        Ok(p) => Ok(Cow::Owned(p.into_owned())),
        Err(_) => stringprep::saslprep(s)
            .map(|p| Cow::Owned(p.into_owned()))
            .map_err(|_| CredentialError::Prohibited),
    }
}

/// The key that MESSAGE-INTEGRITY(-SHA256) is computed with.
///
/// The HMAC states keyed with it (inner and outer pads hashed) are computed
/// once, when the key is made, so each MAC costs only the message's own
/// blocks.
#[derive(Clone)]
pub struct Key {
    bytes: Vec<u8>,
    sha1: Hmac<Sha1>,
    sha256: Hmac<Sha256>,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.bytes.ct_eq(&other.bytes))
    }
}

impl Eq for Key {}

impl Key {
    /// A short-term credential key: the prepared password (RFC 8489 §9.1.1).
    /// ICE uses this with the peer's `ice-pwd`.
    pub fn short_term(password: &str) -> Result<Key, CredentialError> {
        Ok(Key::from_bytes(prepare(password)?.as_bytes()))
    }

    /// A long-term credential key (RFC 8489 §9.2.2):
    /// `H(username ":" OpaqueString(realm) ":" OpaqueString(password))` with H
    /// MD5 (16 bytes) or SHA-256 (32 bytes).
    pub fn long_term(
        username: &str,
        realm: &str,
        password: &str,
        algorithm: PasswordAlgorithm,
    ) -> Result<Key, CredentialError> {
        let realm = prepare(realm)?;
        let password = prepare(password)?;
        let parts = [
            username.as_bytes(),
            b":",
            realm.as_bytes(),
            b":",
            password.as_bytes(),
        ];
        match algorithm {
            PasswordAlgorithm::Md5 => {
                let mut h = Md5::new();
                parts.iter().for_each(|p| h.update(p));
                Ok(Key::from_bytes(h.finalize().as_slice()))
            }
            PasswordAlgorithm::Sha256 => {
                let mut h = Sha256::new();
                parts.iter().for_each(|p| h.update(p));
                Ok(Key::from_bytes(h.finalize().as_slice()))
            }
            PasswordAlgorithm::Other(n) => Err(CredentialError::UnsupportedAlgorithm(n)),
        }
    }

    /// A key from raw bytes (e.g. a long-term key stored hashed, as coturn's
    /// `turnadmin` does).
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Key {
        let bytes = bytes.into();
        // HMAC accepts keys of any length: new_from_slice cannot fail.
        let sha1 = <Hmac<Sha1> as Mac>::new_from_slice(&bytes).unwrap_or_else(|_| unreachable!());
        let sha256 =
            <Hmac<Sha256> as Mac>::new_from_slice(&bytes).unwrap_or_else(|_| unreachable!());
        Key {
            bytes,
            sha1,
            sha256,
        }
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({} bytes)", self.bytes.len())
    }
}

/// USERHASH (RFC 8489 §14.4): SHA-256(OpaqueString(username) ":" OpaqueString(realm)).
pub fn userhash(username: &str, realm: &str) -> Result<[u8; 32], CredentialError> {
    let (u, r) = (prepare(username)?, prepare(realm)?);
    let mut h = Sha256::new();
    h.update(u.as_bytes());
    h.update(b":");
    h.update(r.as_bytes());
    Ok(h.finalize().into())
}

/// HMAC-SHA1 over `parts` (in order), for MESSAGE-INTEGRITY.
pub(crate) fn hmac_sha1(key: &Key, parts: &[&[u8]]) -> [u8; 20] {
    let mut m = key.sha1.clone();
    parts.iter().for_each(|p| m.update(p));
    m.finalize().into_bytes().into()
}

/// HMAC-SHA256 over `parts` (in order), for MESSAGE-INTEGRITY-SHA256.
pub(crate) fn hmac_sha256(key: &Key, parts: &[&[u8]]) -> [u8; 32] {
    let mut m = key.sha256.clone();
    parts.iter().for_each(|p| m.update(p));
    m.finalize().into_bytes().into()
}

/// The FINGERPRINT value: CRC-32 of the message before it, XOR 0x5354554e.
pub(crate) fn fingerprint(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    parts.iter().for_each(|p| h.update(p));
    h.finalize() ^ 0x5354_554e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_passwords_are_unchanged() {
        assert_eq!(
            prepare("VOkJxbRl1RmTxUk/WvJxBt").unwrap(),
            "VOkJxbRl1RmTxUk/WvJxBt"
        );
    }

    #[test]
    fn rfc5769_long_term_password_prepares_to_the_matrix() {
        // RFC 5769 §2.4: "The<U+00AD>M<U+00AA>tr<U+2168>" → "TheMatrIX".
        assert_eq!(
            prepare("The\u{00AD}M\u{00AA}tr\u{2168}").unwrap(),
            "TheMatrIX"
        );
    }

    #[test]
    fn opaque_string_maps_non_ascii_spaces() {
        // OpaqueString maps U+00A0 (no-break space) to U+0020.
        assert_eq!(prepare("a\u{00A0}b").unwrap(), "a b");
    }

    #[test]
    fn prohibited_strings_are_an_error() {
        assert_eq!(prepare("a\u{0007}b"), Err(CredentialError::Prohibited));
    }

    #[test]
    fn long_term_key_lengths() {
        let md5 = Key::long_term("user", "realm", "pass", PasswordAlgorithm::Md5).unwrap();
        let sha = Key::long_term("user", "realm", "pass", PasswordAlgorithm::Sha256).unwrap();
        assert_eq!(md5.as_bytes().len(), 16);
        assert_eq!(sha.as_bytes().len(), 32);
        // MD5("user:realm:pass"), computed independently.
        assert_eq!(
            md5.as_bytes(),
            &[
                0x84, 0x93, 0xfb, 0xc5, 0x3b, 0xa5, 0x82, 0xfb, 0x4c, 0x04, 0x4c, 0x45, 0x6b, 0xdc,
                0x40, 0xeb
            ]
        );
        assert!(matches!(
            Key::long_term("u", "r", "p", PasswordAlgorithm::Other(7)),
            Err(CredentialError::UnsupportedAlgorithm(7))
        ));
    }
}
