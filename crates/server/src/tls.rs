//! The daemon's TLS certificates (STUN/TURN over TLS, and the signaling
//! port), held in a slot that a reload (SIGHUP) swaps: connections made
//! after the swap get the new certificate, connections already up keep
//! theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::ServerError;

/// What `openssl req -x509` makes by default (a CA certificate) does not
/// work as a server certificate: say so, and how to make one that does.
pub(crate) const CA_AS_SERVER_CERT: &str = "it is a CA certificate (basicConstraints CA:TRUE, what `openssl req -x509` makes by default), which TLS clients such as rustls refuse as a server's certificate (CaUsedAsEndEntity); use a leaf certificate: one signed by that CA, or a self-signed one made with `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 -subj /CN=HOST -addext basicConstraints=critical,CA:FALSE -addext subjectAltName=DNS:HOST -keyout key.pem -out cert.pem`";

/// A certificate and key, read from their files, that a reload can swap.
#[derive(Debug)]
pub(crate) struct CertSlot {
    key: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match self.key.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        })
    }
}

impl CertSlot {
    /// Put a freshly loaded certificate in place.
    pub(crate) fn swap(&self, key: Arc<CertifiedKey>) {
        match self.key.write() {
            Ok(mut k) => *k = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }
}

/// The files of a certificate, with what they loaded to.
#[derive(Debug, Clone)]
pub(crate) struct CertFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

fn tls_err(path: &Path, e: impl std::fmt::Display) -> ServerError {
    ServerError::Tls(format!("{}: {e}", path.display()))
}

/// Read a PEM certificate chain and its private key. A CA certificate
/// used as the server's own is logged as a warning with the fix (browsers
/// may take it; rustls clients, `p2p connect` among them, do not).
pub(crate) fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, ServerError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| ServerError::Tls(format!("cannot read {}: {e}", p.display())))
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(cert, e))?;
    if certs.is_empty() {
        return Err(tls_err(cert, "no certificate"));
    }
    let private: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| tls_err(key, e))?
        .ok_or_else(|| tls_err(key, "no private key"))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified =
        CertifiedKey::from_der(certs, private, &provider).map_err(|e| tls_err(key, e))?;
    if is_ca_certificate(&certified.cert) {
        tracing::warn!("{}: {CA_AS_SERVER_CERT}", cert.display());
    }
    Ok(Arc::new(certified))
}

/// Whether the end-entity certificate of `chain` is a CA certificate, as
/// a rustls client would find (checked with the chain's own certificates
/// as the trust anchors).
pub(crate) fn is_ca_certificate(chain: &[CertificateDer<'static>]) -> bool {
    let Some((ee, rest)) = chain.split_first() else {
        return false;
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in chain {
        let _ = roots.add(c.clone());
    }
    if roots.is_empty() {
        return false;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(verifier) =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
    else {
        return false;
    };
    let name = ServerName::try_from("localhost").expect("a valid name");
    match verifier.verify_server_cert(ee, rest, &name, &[], UnixTime::now()) {
        Err(e) => e.to_string().contains("CaUsedAsEndEntity"),
        Ok(_) => false,
    }
}

/// A TLS acceptor whose certificate sits in a slot a reload can swap.
pub(crate) fn acceptor(files: &CertFiles) -> Result<(TlsAcceptor, Arc<CertSlot>), ServerError> {
    let slot = Arc::new(CertSlot {
        key: RwLock::new(load(&files.cert, &files.key)?),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(slot.clone());
    Ok((TlsAcceptor::from(Arc::new(config)), slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair(ca: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_self_signed_ca_certificate_is_told_from_a_leaf() {
        assert!(is_ca_certificate(&chain(&pem_pair(true).0)));
        assert!(!is_ca_certificate(&chain(&pem_pair(false).0)));
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("p2p-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, _) = pem_pair(false);
        let (_, other_key) = pem_pair(false);
        std::fs::write(dir.join("c.pem"), cert).unwrap();
        std::fs::write(dir.join("k.pem"), other_key).unwrap();
        let err = load(&dir.join("c.pem"), &dir.join("k.pem")).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(err.to_string().contains("k.pem"), "{err}");
    }
}
