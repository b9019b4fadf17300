//! The endpoint's own certificate: ECDSA P-256, self-signed, made at start
//! or loaded (RFC 8827 §6.5: WebRTC identifies a peer by its certificate's
//! fingerprint, not by a chain).

use std::fmt;

use base64::Engine as _;
use dimpl::crypto::{Buf, HashAlgorithm, SignatureAlgorithm};
use rand::RngCore;

use crate::fingerprint::{Fingerprint, HashFunction};

/// A certificate and its private key, as the DTLS handshake uses them.
///
/// [`Certificate::generate`] makes the kind browsers make: an ECDSA P-256
/// key, a self-signed certificate with a random common name and a random
/// 128-bit serial number (Firefox refuses two certificates of one issuer
/// and serial). No clock is read: the validity is rcgen's fixed default
/// (1975 to 4096), which WebRTC peers do not check.
///
/// ```
/// use p2p_dtls::{Certificate, HashFunction};
///
/// let cert = Certificate::generate()?;
/// let f = cert.fingerprint();
/// assert_eq!(f.hash_function(), HashFunction::Sha256);
/// assert!(f.matches(cert.der()));
/// // Saved and loaded again, it is the same certificate.
/// let again = Certificate::from_pem(&cert.certificate_pem(), &cert.private_key_pem())?;
/// assert_eq!(again.fingerprint(), f);
/// # Ok::<(), p2p_dtls::CertificateError>(())
/// ```
#[derive(Clone)]
pub struct Certificate {
    der: Vec<u8>,
    key_der: Vec<u8>,
    fingerprint: Fingerprint,
}

/// Why a certificate could not be made or loaded.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The key pair or the certificate could not be made (no OS entropy).
    #[error("could not generate the key pair or the certificate")]
    Generate,
    /// The certificate is not a DER X.509 certificate with an ECDSA P-256
    /// or P-384 public key.
    #[error("not an X.509 certificate with an ECDSA P-256 or P-384 key")]
    BadCertificate,
    /// The private key is not an ECDSA P-256 or P-384 key in PKCS#8 or
    /// SEC1 DER.
    #[error("not an ECDSA P-256 or P-384 private key (PKCS#8 or SEC1)")]
    BadPrivateKey,
    /// The private key is not the certificate's.
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    /// The PEM text holds no certificate, or no private key.
    #[error("no {0} found in the PEM text")]
    MissingPem(&'static str),
}

impl Certificate {
    /// A new ECDSA P-256 key and a self-signed certificate for it, with a
    /// random common name.
    pub fn generate() -> Result<Certificate, CertificateError> {
        let mut rng = rand::thread_rng();
        let name = format!("p2p-{:016x}", rng.next_u64());
        Certificate::generate_with_name(&name)
    }

    /// A new ECDSA P-256 key and a self-signed certificate for it, with
    /// common name `common_name`.
    pub fn generate_with_name(common_name: &str) -> Result<Certificate, CertificateError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|_| CertificateError::Generate)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|_| CertificateError::Generate)?;
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, common_name);
        params.distinguished_name = dn;
        let mut serial = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut serial);
        serial[0] &= 0x7f; // a positive INTEGER
        serial[0] |= 0x01; // and a full 16 bytes long
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params
            .self_signed(&key)
            .map_err(|_| CertificateError::Generate)?;
        Certificate::from_der(cert.der().to_vec(), key.serialize_der())
    }

    /// A certificate (DER) and its private key (PKCS#8 or SEC1 DER),
    /// checked: the certificate has an ECDSA P-256 or P-384 key, and the
    /// private key signs what that key verifies.
    pub fn from_der(
        certificate: Vec<u8>,
        private_key: Vec<u8>,
    ) -> Result<Certificate, CertificateError> {
        dimpl::crypto::cert_named_group(&certificate)
            .map_err(|_| CertificateError::BadCertificate)?;
        let provider = crate::provider();
        let mut key = provider
            .key_provider
            .load_private_key(&private_key)
            .map_err(|_| CertificateError::BadPrivateKey)?;
        let message = b"p2p-dtls: does this key belong to this certificate?";
        let hash = key.hash_algorithm();
        let mut signature = Buf::new();
        key.sign(message, hash, &mut signature)
            .map_err(|_| CertificateError::BadPrivateKey)?;
        provider
            .signature_verification
            .verify_signature(
                &certificate,
                message,
                &signature,
                hash,
                SignatureAlgorithm::ECDSA,
            )
            .map_err(|_| CertificateError::KeyMismatch)?;
        debug_assert!(matches!(
            hash,
            HashAlgorithm::SHA256 | HashAlgorithm::SHA384
        ));
        Ok(Certificate {
            fingerprint: Fingerprint::of_der(HashFunction::Sha256, &certificate),
            der: certificate,
            key_der: private_key,
        })
    }

    /// A certificate and its private key from PEM text (`CERTIFICATE`, and
    /// `PRIVATE KEY` or `EC PRIVATE KEY`); the first of each is taken, and
    /// both may be in one text.
    pub fn from_pem(certificate: &str, private_key: &str) -> Result<Certificate, CertificateError> {
        let cert = rustls_pemfile::certs(&mut certificate.as_bytes())
            .find_map(Result::ok)
            .ok_or(CertificateError::MissingPem("CERTIFICATE"))?;
        let key = rustls_pemfile::private_key(&mut private_key.as_bytes())
            .ok()
            .flatten()
            .ok_or(CertificateError::MissingPem("PRIVATE KEY"))?;
        Certificate::from_der(cert.to_vec(), key.secret_der().to_vec())
    }

    /// The certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The private key, DER (PKCS#8 when generated here).
    pub fn private_key_der(&self) -> &[u8] {
        &self.key_der
    }

    /// The certificate as PEM (`CERTIFICATE`).
    pub fn certificate_pem(&self) -> String {
        pem("CERTIFICATE", &self.der)
    }

    /// The private key as PEM (`PRIVATE KEY`; `EC PRIVATE KEY` when it was
    /// loaded as SEC1).
    pub fn private_key_pem(&self) -> String {
        // A PKCS#8 key starts SEQUENCE { INTEGER 0, SEQUENCE { OID … } };
        // SEC1 starts SEQUENCE { INTEGER 1, OCTET STRING … }.
        let sec1 = matches!(self.key_der.get(2..5), Some([2, 1, 1]))
            || matches!(self.key_der.get(1..6), Some([0x81, _, 2, 1, 1]));
        pem(
            if sec1 {
                "EC PRIVATE KEY"
            } else {
                "PRIVATE KEY"
            },
            &self.key_der,
        )
    }

    /// The SHA-256 fingerprint, what `a=fingerprint` says of this
    /// certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint.clone()
    }

    /// The fingerprint with another hash function.
    pub fn fingerprint_with(&self, hash: HashFunction) -> Fingerprint {
        Fingerprint::of_der(hash, &self.der)
    }

    pub(crate) fn to_dimpl(&self) -> dimpl::DtlsCertificate {
        dimpl::DtlsCertificate {
            certificate: self.der.clone(),
            private_key: self.key_der.clone(),
        }
    }
}

impl fmt::Debug for Certificate {
    /// The fingerprint, never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("fingerprint", &self.fingerprint.to_string())
            .finish_non_exhaustive()
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_loads_back_from_der_and_pem() {
        let c = Certificate::generate().unwrap();
        let d = Certificate::from_der(c.der().to_vec(), c.private_key_der().to_vec()).unwrap();
        assert_eq!(d.fingerprint(), c.fingerprint());
        let p = Certificate::from_pem(&c.certificate_pem(), &c.private_key_pem()).unwrap();
        assert_eq!(p.der(), c.der());
        let both = format!("{}{}", c.private_key_pem(), c.certificate_pem());
        assert!(Certificate::from_pem(&both, &both).is_ok());
        assert!(c
            .private_key_pem()
            .starts_with("-----BEGIN PRIVATE KEY-----\n"));
    }

    #[test]
    fn two_generated_certificates_differ() {
        let (a, b) = (
            Certificate::generate().unwrap(),
            Certificate::generate().unwrap(),
        );
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let (a, b) = (
            Certificate::generate().unwrap(),
            Certificate::generate().unwrap(),
        );
        assert_eq!(
            Certificate::from_der(a.der().to_vec(), b.private_key_der().to_vec()).map(drop),
            Err(CertificateError::KeyMismatch)
        );
        assert_eq!(
            Certificate::from_der(b"junk".to_vec(), a.private_key_der().to_vec()).map(drop),
            Err(CertificateError::BadCertificate)
        );
        assert_eq!(
            Certificate::from_der(a.der().to_vec(), b"junk".to_vec()).map(drop),
            Err(CertificateError::BadPrivateKey)
        );
        assert_eq!(
            Certificate::from_pem("", &a.private_key_pem()).map(drop),
            Err(CertificateError::MissingPem("CERTIFICATE"))
        );
        assert_eq!(
            Certificate::from_pem(&a.certificate_pem(), "").map(drop),
            Err(CertificateError::MissingPem("PRIVATE KEY"))
        );
    }

    #[test]
    fn debug_shows_the_fingerprint_not_the_key() {
        let c = Certificate::generate_with_name("test").unwrap();
        let s = format!("{c:?}");
        assert!(s.contains("sha-256"), "{s}");
        assert!(!s.contains("key_der"), "{s}");
    }
}
