//! The crypto the DTLS library runs on: its RustCrypto provider, with the
//! record ciphers (AES-GCM, ChaCha20-Poly1305) of `ring` in place of
//! RustCrypto's.
//!
//! Every record of the data path is sealed once and opened once, so the
//! AEAD is most of DTLS's CPU per datagram: RustCrypto's AES-128-GCM took
//! a quarter of the sender's time in the in-memory floor
//! (`benches/src/bin/channel_floor.rs`, docs/performance.md "The floor"),
//! ring's (assembly, stitched AES-GCM) is several times faster. Everything
//! else (key exchange, signatures, hashes, HMAC, randomness, DTLS 1.3
//! record-number protection) stays RustCrypto's: the handshake runs once.
//! `ring` is already in the workspace (rustls), so this adds no C build.
//!
//! The suites offered, their order and their parameters are RustCrypto's
//! unchanged; only [`create_cipher`](SupportedDtls12CipherSuite::create_cipher)
//! differs. A suite ring has no cipher for (the PSK AES-CCM-8 suite, which
//! WebRTC never negotiates) keeps RustCrypto's.

use std::sync::OnceLock;

use dimpl::crypto::{
    Aad, Buf, Cipher, CryptoProvider, Dtls12CipherSuite, Dtls13CipherSuite, HashAlgorithm, Nonce,
    SupportedDtls12CipherSuite, SupportedDtls13CipherSuite, TmpBuf,
};
use dimpl::{CryptoError, CryptoOperation};
use ring::aead::{self, LessSafeKey, UnboundKey};

/// The AEAD tag length of every suite here.
const TAG_LEN: usize = 16;

/// One direction's record cipher on ring.
struct RingAead {
    key: LessSafeKey,
}

impl std::fmt::Debug for RingAead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingAead")
            .field("algorithm", self.key.algorithm())
            .finish_non_exhaustive()
    }
}

impl RingAead {
    fn new(algorithm: &'static aead::Algorithm, key: &[u8]) -> Result<Self, CryptoError> {
        let key = UnboundKey::new(algorithm, key)
            .map_err(|_| CryptoError::OperationFailed(CryptoOperation::CreateCipher))?;
        Ok(RingAead {
            key: LessSafeKey::new(key),
        })
    }
}

impl Cipher for RingAead {
    fn encrypt(&mut self, plaintext: &mut Buf, aad: Aad, nonce: Nonce) -> Result<(), CryptoError> {
        let nonce = aead::Nonce::assume_unique_for_key(nonce.0);
        self.key
            .seal_in_place_append_tag(nonce, aead::Aad::from(&aad.0[..]), plaintext)
            .map_err(|_| CryptoError::OperationFailed(CryptoOperation::Encrypt))
    }

    fn decrypt(
        &mut self,
        ciphertext: &mut TmpBuf,
        aad: Aad,
        nonce: Nonce,
    ) -> Result<(), CryptoError> {
        if ciphertext.len() < TAG_LEN {
            return Err(CryptoError::CiphertextTooShort {
                minimum: TAG_LEN as u8,
                actual: u8::try_from(ciphertext.len()).unwrap_or(u8::MAX),
            });
        }
        let nonce = aead::Nonce::assume_unique_for_key(nonce.0);
        let len = self
            .key
            .open_in_place(nonce, aead::Aad::from(&aad.0[..]), ciphertext.as_mut())
            .map_err(|_| CryptoError::OperationFailed(CryptoOperation::Decrypt))?
            .len();
        ciphertext.truncate(len);
        Ok(())
    }
}

/// ring's AEAD for a cipher key of this length under this suite family:
/// AES-GCM keys are 16 or 32 bytes, ChaCha20-Poly1305's 32.
fn ring_algorithm(chacha: bool, key_len: usize) -> Option<&'static aead::Algorithm> {
    match (chacha, key_len) {
        (true, 32) => Some(&aead::CHACHA20_POLY1305),
        (false, 16) => Some(&aead::AES_128_GCM),
        (false, 32) => Some(&aead::AES_256_GCM),
        _ => None,
    }
}

/// A DTLS 1.2 suite of RustCrypto's with ring's cipher.
#[derive(Debug)]
struct Suite12 {
    inner: &'static dyn SupportedDtls12CipherSuite,
    chacha: bool,
}

impl SupportedDtls12CipherSuite for Suite12 {
    fn suite(&self) -> Dtls12CipherSuite {
        self.inner.suite()
    }
    fn hash_algorithm(&self) -> HashAlgorithm {
        self.inner.hash_algorithm()
    }
    fn key_lengths(&self) -> (usize, usize, usize) {
        self.inner.key_lengths()
    }
    fn explicit_nonce_len(&self) -> usize {
        self.inner.explicit_nonce_len()
    }
    fn tag_len(&self) -> usize {
        self.inner.tag_len()
    }
    fn min_protected_fragment_len(&self) -> usize {
        self.inner.min_protected_fragment_len()
    }
    fn create_cipher(&self, key: &[u8]) -> Result<Box<dyn Cipher>, CryptoError> {
        match ring_algorithm(self.chacha, key.len()) {
            Some(algorithm) => Ok(Box::new(RingAead::new(algorithm, key)?)),
            None => self.inner.create_cipher(key),
        }
    }
}

/// A DTLS 1.3 suite of RustCrypto's with ring's cipher (record-number
/// protection stays RustCrypto's).
#[derive(Debug)]
struct Suite13 {
    inner: &'static dyn SupportedDtls13CipherSuite,
    chacha: bool,
}

impl SupportedDtls13CipherSuite for Suite13 {
    fn suite(&self) -> Dtls13CipherSuite {
        self.inner.suite()
    }
    fn hash_algorithm(&self) -> HashAlgorithm {
        self.inner.hash_algorithm()
    }
    fn key_len(&self) -> usize {
        self.inner.key_len()
    }
    fn iv_len(&self) -> usize {
        self.inner.iv_len()
    }
    fn tag_len(&self) -> usize {
        self.inner.tag_len()
    }
    fn min_protected_fragment_len(&self) -> usize {
        self.inner.min_protected_fragment_len()
    }
    fn create_cipher(&self, key: &[u8]) -> Result<Box<dyn Cipher>, CryptoError> {
        match ring_algorithm(self.chacha, key.len()) {
            Some(algorithm) => Ok(Box::new(RingAead::new(algorithm, key)?)),
            None => self.inner.create_cipher(key),
        }
    }
    fn encrypt_sn(&self, sn_key: &[u8], sample: &[u8; 16]) -> [u8; 16] {
        self.inner.encrypt_sn(sn_key, sample)
    }
}

type Suites12 = &'static [&'static dyn SupportedDtls12CipherSuite];
type Suites13 = &'static [&'static dyn SupportedDtls13CipherSuite];

/// The wrapped suites, made once per process (the provider wants
/// `'static` tables).
fn suites() -> (Suites12, Suites13) {
    static SUITES: OnceLock<(Suites12, Suites13)> = OnceLock::new();
    *SUITES.get_or_init(|| {
        let base = dimpl::crypto::rust_crypto::default_provider();
        let s12: Vec<&'static dyn SupportedDtls12CipherSuite> = base
            .cipher_suites
            .iter()
            .map(|&inner| -> &'static dyn SupportedDtls12CipherSuite {
                let chacha =
                    inner.suite() == Dtls12CipherSuite::ECDHE_ECDSA_CHACHA20_POLY1305_SHA256;
                let gcm = matches!(
                    inner.suite(),
                    Dtls12CipherSuite::ECDHE_ECDSA_AES128_GCM_SHA256
                        | Dtls12CipherSuite::ECDHE_ECDSA_AES256_GCM_SHA384
                );
                if chacha || gcm {
                    Box::leak(Box::new(Suite12 { inner, chacha }))
                } else {
                    inner
                }
            })
            .collect();
        let s13: Vec<&'static dyn SupportedDtls13CipherSuite> = base
            .dtls13_cipher_suites
            .iter()
            .map(|&inner| -> &'static dyn SupportedDtls13CipherSuite {
                let chacha = inner.suite() == Dtls13CipherSuite::CHACHA20_POLY1305_SHA256;
                let gcm = matches!(
                    inner.suite(),
                    Dtls13CipherSuite::AES_128_GCM_SHA256 | Dtls13CipherSuite::AES_256_GCM_SHA384
                );
                if chacha || gcm {
                    Box::leak(Box::new(Suite13 { inner, chacha }))
                } else {
                    inner
                }
            })
            .collect();
        (
            Box::leak(s12.into_boxed_slice()),
            Box::leak(s13.into_boxed_slice()),
        )
    })
}

/// The provider the endpoint gives the library.
pub(crate) fn provider() -> CryptoProvider {
    let (cipher_suites, dtls13_cipher_suites) = suites();
    CryptoProvider {
        cipher_suites,
        dtls13_cipher_suites,
        ..dimpl::crypto::rust_crypto::default_provider()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal_open(algorithm: &'static aead::Algorithm, key: &[u8]) {
        let mut c = RingAead::new(algorithm, key).expect("a key of the right length");
        let mut aad = arrayvec_aad();
        aad.0.truncate(13);
        let nonce = Nonce([7; 12]);
        let mut buf = Buf::new();
        buf.extend_from_slice(b"a record of application data");
        c.encrypt(&mut buf, aad_clone(&aad), Nonce(nonce.0))
            .expect("sealed");
        assert_eq!(buf.len(), 28 + TAG_LEN);
        let mut bytes = buf.to_vec();
        let mut tmp = TmpBuf::new(&mut bytes);
        c.decrypt(&mut tmp, aad_clone(&aad), Nonce(nonce.0))
            .expect("opened");
        assert_eq!(tmp.as_ref(), b"a record of application data");
    }

    fn arrayvec_aad() -> Aad {
        // An Aad is made by the library; a DTLS 1.2-shaped one here.
        let mut a = Aad(Default::default());
        for i in 0..13u8 {
            a.0.push(i);
        }
        a
    }

    fn aad_clone(a: &Aad) -> Aad {
        let mut b = Aad(Default::default());
        for x in a.0.iter() {
            b.0.push(*x);
        }
        b
    }

    #[test]
    fn ring_seals_and_opens_every_aead_the_suites_use() {
        seal_open(&aead::AES_128_GCM, &[1; 16]);
        seal_open(&aead::AES_256_GCM, &[2; 32]);
        seal_open(&aead::CHACHA20_POLY1305, &[3; 32]);
    }

    #[test]
    fn a_record_whose_tag_does_not_match_is_refused() {
        let mut c = RingAead::new(&aead::AES_128_GCM, &[1; 16]).expect("key");
        let mut buf = Buf::new();
        buf.extend_from_slice(b"payload");
        c.encrypt(&mut buf, arrayvec_aad(), Nonce([0; 12]))
            .expect("sealed");
        let mut bytes = buf.to_vec();
        bytes[0] ^= 1;
        let mut tmp = TmpBuf::new(&mut bytes);
        assert_eq!(
            c.decrypt(&mut tmp, arrayvec_aad(), Nonce([0; 12])),
            Err(CryptoError::OperationFailed(CryptoOperation::Decrypt))
        );
        let mut short = [0u8; 15];
        let mut tmp = TmpBuf::new(&mut short);
        assert!(matches!(
            c.decrypt(&mut tmp, arrayvec_aad(), Nonce([0; 12])),
            Err(CryptoError::CiphertextTooShort { minimum: 16, .. })
        ));
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused() {
        assert_eq!(
            RingAead::new(&aead::AES_128_GCM, &[0; 15]).map(drop),
            Err(CryptoError::OperationFailed(CryptoOperation::CreateCipher))
        );
    }

    #[test]
    fn the_suites_are_rustcryptos_in_the_same_order_with_ring_ciphers_where_it_has_them() {
        let base = dimpl::crypto::rust_crypto::default_provider();
        let ours = provider();
        let names12 = |p: &CryptoProvider| {
            p.cipher_suites
                .iter()
                .map(|s| s.suite())
                .collect::<Vec<_>>()
        };
        let names13 = |p: &CryptoProvider| {
            p.dtls13_cipher_suites
                .iter()
                .map(|s| s.suite())
                .collect::<Vec<_>>()
        };
        assert_eq!(names12(&ours), names12(&base));
        assert_eq!(names13(&ours), names13(&base));
        let aes128 = ours
            .dtls13_cipher_suites
            .iter()
            .find(|s| s.suite() == Dtls13CipherSuite::AES_128_GCM_SHA256)
            .expect("AES-128-GCM offered");
        let cipher = aes128.create_cipher(&[9; 16]).expect("a cipher");
        assert!(format!("{cipher:?}").starts_with("RingAead"), "{cipher:?}");
    }
}
