//! Certificate fingerprints as SDP signals them: `a=fingerprint:sha-256
//! AB:CD:…` (RFC 8122 §5, RFC 8842 §5).

use std::fmt;
use std::str::FromStr;

use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// A hash function of RFC 8122 §5 (`hash-func`), named as the IANA "Hash
/// Function Textual Names" registry writes it (`sha-256`).
///
/// `md2` and `md5` are in the registry but RFC 8122 §5 forbids them; they
/// do not parse.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashFunction {
    /// `sha-1` (20 bytes): still accepted, as some old stacks send it.
    Sha1,
    /// `sha-224` (28 bytes).
    Sha224,
    /// `sha-256` (32 bytes): what every browser sends, and what we send.
    Sha256,
    /// `sha-384` (48 bytes).
    Sha384,
    /// `sha-512` (64 bytes).
    Sha512,
}

impl HashFunction {
    /// Every hash function, strongest last.
    pub const ALL: [HashFunction; 5] = [
        HashFunction::Sha1,
        HashFunction::Sha224,
        HashFunction::Sha256,
        HashFunction::Sha384,
        HashFunction::Sha512,
    ];

    /// The lower-case registry name (`sha-256`).
    pub fn as_str(self) -> &'static str {
        match self {
            HashFunction::Sha1 => "sha-1",
            HashFunction::Sha224 => "sha-224",
            HashFunction::Sha256 => "sha-256",
            HashFunction::Sha384 => "sha-384",
            HashFunction::Sha512 => "sha-512",
        }
    }

    /// The length of its digest in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashFunction::Sha1 => 20,
            HashFunction::Sha224 => 28,
            HashFunction::Sha256 => 32,
            HashFunction::Sha384 => 48,
            HashFunction::Sha512 => 64,
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashFunction::Sha1 => Sha1::digest(data).to_vec(),
            HashFunction::Sha224 => Sha224::digest(data).to_vec(),
            HashFunction::Sha256 => Sha256::digest(data).to_vec(),
            HashFunction::Sha384 => Sha384::digest(data).to_vec(),
            HashFunction::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

impl fmt::Display for HashFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HashFunction {
    type Err = FingerprintError;

    /// A registry name in any case (`SHA-256` too; RFC 8122 §5 makes
    /// `hash-func` a case-insensitive token).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HashFunction::ALL
            .into_iter()
            .find(|h| h.as_str().eq_ignore_ascii_case(s))
            .ok_or(FingerprintError::UnknownHashFunction)
    }
}

/// Why a fingerprint did not parse or could not be made.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    /// Nothing but white space.
    #[error("empty fingerprint")]
    Empty,
    /// The hash function is missing its value (no space, or nothing after it).
    #[error("a fingerprint is `hash-func SP hex:hex:…`; the hex part is missing")]
    MissingValue,
    /// The hash function is not `sha-1`, `sha-224`, `sha-256`, `sha-384` or
    /// `sha-512` (`md5` and `md2` are refused, RFC 8122 §5).
    #[error(
        "unknown or refused hash function (expected sha-1, sha-224, sha-256, sha-384 or sha-512)"
    )]
    UnknownHashFunction,
    /// The `index`th (from 0) `:`-separated part is not two hex digits.
    #[error("part {index} of the fingerprint is not two hex digits")]
    BadHex {
        /// Which part, counting from 0.
        index: usize,
    },
    /// The digest is not as long as the hash function makes them.
    #[error("a {hash} fingerprint has {expected} bytes, this one has {got}")]
    WrongLength {
        /// The hash function named.
        hash: HashFunction,
        /// Its digest length.
        expected: usize,
        /// The number of bytes given.
        got: usize,
    },
}

/// A certificate fingerprint: a hash function and the digest of the
/// certificate's DER with it (RFC 8122 §5).
///
/// Its text form is the value of `a=fingerprint`: `sha-256 AB:CD:…`, upper
/// case hex, as browsers write it. [`Fingerprint::parse`] reads the hash
/// name and the hex in either case.
///
/// ```
/// use p2p_dtls::{Fingerprint, HashFunction};
///
/// let f = Fingerprint::of_der(HashFunction::Sha256, b"not really a certificate");
/// let text = f.to_string();
/// assert!(text.starts_with("sha-256 "));
/// assert_eq!(Fingerprint::parse(&text.to_lowercase()), Ok(f.clone()));
/// assert!(f.matches(b"not really a certificate"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    hash: HashFunction,
    digest: Vec<u8>,
}

impl Fingerprint {
    /// The fingerprint of a certificate (its DER) with `hash`.
    pub fn of_der(hash: HashFunction, der: &[u8]) -> Fingerprint {
        Fingerprint {
            hash,
            digest: hash.digest(der),
        }
    }

    /// A fingerprint from its parts; the digest must be as long as `hash`
    /// makes them.
    pub fn new(hash: HashFunction, digest: Vec<u8>) -> Result<Fingerprint, FingerprintError> {
        if digest.len() != hash.digest_len() {
            return Err(FingerprintError::WrongLength {
                hash,
                expected: hash.digest_len(),
                got: digest.len(),
            });
        }
        Ok(Fingerprint { hash, digest })
    }

    /// Reads `hash-func SP fingerprint` (the value of `a=fingerprint`):
    /// the hash name in any case, one or more spaces or tabs, then hex
    /// pairs in either case separated by `:`. White space around the whole
    /// is ignored.
    pub fn parse(s: &str) -> Result<Fingerprint, FingerprintError> {
        let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
        if s.is_empty() {
            return Err(FingerprintError::Empty);
        }
        let (name, value) = s
            .split_once([' ', '\t'])
            .ok_or(FingerprintError::MissingValue)?;
        let hash: HashFunction = name.parse()?;
        let value = value.trim_start_matches([' ', '\t']);
        if value.is_empty() {
            return Err(FingerprintError::MissingValue);
        }
        let mut digest = Vec::with_capacity(hash.digest_len());
        for (index, part) in value.split(':').enumerate() {
            let b = part.as_bytes();
            let byte = match b {
                [h, l] => hex_value(*h)
                    .zip(hex_value(*l))
                    .map(|(h, l)| h << 4 | l)
                    .ok_or(FingerprintError::BadHex { index })?,
                _ => return Err(FingerprintError::BadHex { index }),
            };
            if digest.len() >= hash.digest_len() {
                // Too long: count the parts without keeping them.
                let got = value.split(':').count();
                return Err(FingerprintError::WrongLength {
                    hash,
                    expected: hash.digest_len(),
                    got,
                });
            }
            digest.push(byte);
        }
        Fingerprint::new(hash, digest)
    }

    /// The hash function.
    pub fn hash_function(&self) -> HashFunction {
        self.hash
    }

    /// The digest.
    pub fn digest(&self) -> &[u8] {
        &self.digest
    }

    /// Whether `der` (a certificate) has this fingerprint.
    pub fn matches(&self, der: &[u8]) -> bool {
        self.hash.digest(der) == self.digest
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Fingerprint {
    /// `sha-256 AB:CD:…` (upper-case hex, as RFC 8122 §5's `UHEX`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hash.as_str())?;
        for (n, b) in self.digest.iter().enumerate() {
            let sep = if n == 0 { ' ' } else { ':' };
            write!(f, "{sep}{b:02X}")?;
        }
        Ok(())
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fingerprint::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Chromium offer's line (the value after `a=fingerprint:`).
    const CHROMIUM: &str = "sha-256 5B:D6:8E:61:0B:0E:C8:9A:6F:D3:0C:5C:3F:94:49:7A:8F:53:2B:9F:9B:3B:F3:45:42:40:13:6B:2D:3F:80:FA";

    #[test]
    fn a_browser_fingerprint_reads_and_writes_back_the_same() {
        let f = Fingerprint::parse(CHROMIUM).unwrap();
        assert_eq!(f.hash_function(), HashFunction::Sha256);
        assert_eq!(f.digest().len(), 32);
        assert_eq!(f.digest()[0], 0x5B);
        assert_eq!(f.to_string(), CHROMIUM);
        assert_eq!(CHROMIUM.parse::<Fingerprint>(), Ok(f));
    }

    #[test]
    fn the_hash_name_and_the_hex_read_in_either_case() {
        let upper = CHROMIUM.replace("sha-256", "SHA-256");
        let lower = CHROMIUM.to_lowercase();
        let f = Fingerprint::parse(CHROMIUM).unwrap();
        assert_eq!(Fingerprint::parse(&upper), Ok(f.clone()));
        assert_eq!(Fingerprint::parse(&lower), Ok(f.clone()));
        assert_eq!(
            Fingerprint::parse(&format!(" \t{CHROMIUM}\r\n")),
            Ok(f.clone())
        );
        assert_eq!(
            Fingerprint::parse(&CHROMIUM.replacen(' ', "  \t ", 1)),
            Ok(f)
        );
    }

    #[test]
    fn every_hash_function_round_trips_with_its_own_length() {
        for h in HashFunction::ALL {
            let f = Fingerprint::of_der(h, b"der");
            assert_eq!(f.digest().len(), h.digest_len());
            assert_eq!(Fingerprint::parse(&f.to_string()), Ok(f.clone()), "{h}");
            assert!(f.matches(b"der") && !f.matches(b"DER"));
        }
    }

    #[test]
    fn bad_fingerprints_say_what_is_wrong() {
        use FingerprintError::*;
        let cases: &[(&str, FingerprintError)] = &[
            ("", Empty),
            ("   ", Empty),
            ("sha-256", MissingValue),
            ("sha-256   ", MissingValue),
            ("md5 AB:CD", UnknownHashFunction),
            ("sha256 AB", UnknownHashFunction),
            ("sha-256 AB:C", BadHex { index: 1 }),
            ("sha-256 AB::CD", BadHex { index: 1 }),
            ("sha-256 ABC:DE", BadHex { index: 0 }),
            ("sha-256 AB:GG", BadHex { index: 1 }),
            ("sha-256 AB:", BadHex { index: 1 }),
            (
                "sha-256 AB:CD",
                WrongLength {
                    hash: HashFunction::Sha256,
                    expected: 32,
                    got: 2,
                },
            ),
            ("sha-1 é1", BadHex { index: 0 }),
        ];
        for (input, want) in cases {
            assert_eq!(Fingerprint::parse(input), Err(*want), "{input:?}");
        }
        let long = format!("{CHROMIUM}:00");
        assert_eq!(
            Fingerprint::parse(&long),
            Err(WrongLength {
                hash: HashFunction::Sha256,
                expected: 32,
                got: 33
            })
        );
        assert_eq!(
            Fingerprint::new(HashFunction::Sha1, vec![0; 32]),
            Err(WrongLength {
                hash: HashFunction::Sha1,
                expected: 20,
                got: 32
            })
        );
    }

    #[test]
    fn sha_256_of_known_bytes_is_the_known_digest() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let f = Fingerprint::of_der(HashFunction::Sha256, b"abc");
        assert_eq!(
            f.to_string(),
            "sha-256 BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_what_parses_writes_back(s in "\\PC{0,120}") {
            if let Ok(f) = Fingerprint::parse(&s) {
                proptest::prop_assert_eq!(Fingerprint::parse(&f.to_string()), Ok(f));
            }
        }
    }
}
