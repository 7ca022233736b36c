//! Stateless HelloVerifyRequest cookies (RFC 6347 §4.2.1):
//! `cookie = HMAC-SHA256(secret, client address ‖ ClientHello parameters)`.
//!
//! The parameters are `client_version`, `random`, `session_id`,
//! `cipher_suites` and `compression_methods` — the fields a client must
//! repeat unchanged in its second ClientHello. Extensions are left out, as
//! RFC 6347 suggests, so a client that reorders them still gets through.
//! The secret is 32 random bytes and rotates every `rotation`; a cookie made
//! with the previous secret is still accepted, so a cookie lives between one
//! and two rotation periods.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::record::ClientHello;

/// Cookie length: a whole HMAC-SHA256.
pub(crate) const COOKIE_LEN: usize = 32;

/// A cookie as it travels in the HelloVerifyRequest.
pub(crate) type Cookie = [u8; COOKIE_LEN];

/// A cookie secret as a keyed HMAC-SHA256 (RustCrypto's `hmac`): keyed
/// once, cloned for each cookie, so a cookie costs the compression of its
/// own input and no key set-up, provider lookup or allocation. The raw key
/// bytes are wiped at once; the keyed state (equivalent to the key for
/// making cookies) is wiped on drop (`hmac`'s `zeroize` feature).
struct Secret {
    mac: Hmac<Sha256>,
}

impl Secret {
    fn random() -> Result<Self, openssl::error::ErrorStack> {
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        openssl::rand::rand_bytes(&mut key[..])?;
        Ok(Secret::new(&key))
    }

    fn new(key: &[u8; 32]) -> Self {
        // HMAC takes a key of any length; 32 bytes is below SHA-256's block.
        let mac = match Hmac::<Sha256>::new_from_slice(key) {
            Ok(mac) => mac,
            Err(hmac::digest::InvalidLength) => unreachable!("HMAC accepts every key length"),
        };
        Secret { mac }
    }

    fn cookie(&self, addr: &SocketAddr, hello: &ClientHello<'_>) -> Cookie {
        let mut mac = self.mac.clone();
        match addr {
            SocketAddr::V4(a) => {
                mac.update(&[4]);
                mac.update(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                mac.update(&[6]);
                mac.update(&a.ip().octets());
            }
        }
        mac.update(&addr.port().to_be_bytes());
        mac.update(&hello.client_version.to_be_bytes());
        mac.update(hello.random);
        // Length-prefix the variable fields so no two inputs collide.
        for field in [
            hello.session_id,
            hello.cipher_suites,
            hello.compression_methods,
        ] {
            mac.update(&(field.len() as u16).to_be_bytes());
            mac.update(field);
        }
        mac.finalize().into_bytes().into()
    }
}

/// The current and previous cookie secrets.
pub(crate) struct CookieJar {
    current: Secret,
    previous: Option<Secret>,
    /// When `current` came into use; set by the first `rotate_if_due`.
    rotated_at: Option<Instant>,
    rotation: Duration,
}

impl CookieJar {
    /// A jar with a fresh random secret.
    pub(crate) fn new(rotation: Duration) -> Result<Self, openssl::error::ErrorStack> {
        Ok(CookieJar {
            current: Secret::random()?,
            previous: None,
            rotated_at: None,
            rotation,
        })
    }

    /// Rotates the secret if a rotation period has passed (both secrets if
    /// two have). Called lazily on every ClientHello; needs no timer.
    pub(crate) fn rotate_if_due(&mut self, now: Instant) {
        let Some(rotated_at) = self.rotated_at else {
            self.rotated_at = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(rotated_at);
        if elapsed < self.rotation {
            return;
        }
        let Ok(fresh) = Secret::random() else {
            // No randomness: keep the old secret rather than fail open.
            return;
        };
        let old = std::mem::replace(&mut self.current, fresh);
        if elapsed < self.rotation.saturating_mul(2) {
            // On schedule (give or take laziness): the old secret stays
            // valid for one more period, counted from when it was due.
            self.previous = Some(old);
            self.rotated_at = Some(rotated_at + self.rotation);
        } else {
            // Two periods without a ClientHello: both secrets are stale.
            self.previous = None;
            self.rotated_at = Some(now);
        }
    }

    /// The cookie for this client under the current secret.
    pub(crate) fn cookie(&self, addr: &SocketAddr, hello: &ClientHello<'_>) -> Cookie {
        self.current.cookie(addr, hello)
    }

    /// Whether `hello` carries a cookie made by the current or the previous
    /// secret for this address; compared in constant time.
    pub(crate) fn verify(&self, addr: &SocketAddr, hello: &ClientHello<'_>) -> Option<Cookie> {
        if hello.cookie.len() != COOKIE_LEN {
            return None;
        }
        [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .map(|secret| secret.cookie(addr, hello))
            .find(|expected| openssl::memcmp::eq(expected, hello.cookie))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{cookieless_copy, parse_client_hello, with_cookie};

    fn hello_bytes() -> Vec<u8> {
        let hello = ClientHello {
            record_version: 0xfefd,
            record_seq: 0,
            message_seq: 0,
            client_version: 0xfefd,
            random: &[0x11; 32],
            session_id: &[],
            cookie: &[],
            cipher_suites: &[0xc0, 0xa8, 0x00, 0xae],
            compression_methods: &[0],
            extensions: &[],
        };
        cookieless_copy(&hello, 0, 0)
    }

    #[test]
    fn a_cookie_binds_address_and_hello_and_survives_one_rotation_only() {
        let t0 = Instant::now();
        let rotation = Duration::from_secs(60);
        let mut jar = CookieJar::new(rotation).unwrap();
        jar.rotate_if_due(t0);
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let bytes = hello_bytes();
        let hello = parse_client_hello(&bytes).unwrap();
        let cookie = jar.cookie(&addr, &hello);
        let second = with_cookie(&hello, &cookie);
        let second = parse_client_hello(&second).unwrap();
        assert!(jar.verify(&addr, &second).is_some());
        assert!(jar.verify(&other, &second).is_none());

        let mut tampered = with_cookie(&hello, &cookie);
        tampered[13 + 12 + 2] ^= 1; // first byte of random
        assert!(
            jar.verify(&addr, &parse_client_hello(&tampered).unwrap())
                .is_none()
        );

        jar.rotate_if_due(t0 + rotation * 2 - Duration::from_secs(1));
        assert!(jar.verify(&addr, &second).is_some(), "previous secret");
        // Rotated late, but the previous secret still expires on schedule.
        jar.rotate_if_due(t0 + rotation * 2);
        assert!(jar.verify(&addr, &second).is_none(), "two periods");
    }

    #[test]
    fn the_cookie_is_openssls_hmac_sha256() {
        use openssl::hash::MessageDigest;
        use openssl::pkey::PKey;
        use openssl::sign::Signer;

        let key = [0x5a; 32];
        let secret = Secret::new(&key);
        let bytes = hello_bytes();
        let hello = parse_client_hello(&bytes).unwrap();
        for addr in ["192.0.2.7:5684", "[2001:db8::1]:61000"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut input = Vec::new();
            match addr {
                SocketAddr::V4(a) => {
                    input.push(4);
                    input.extend_from_slice(&a.ip().octets());
                }
                SocketAddr::V6(a) => {
                    input.push(6);
                    input.extend_from_slice(&a.ip().octets());
                }
            }
            input.extend_from_slice(&addr.port().to_be_bytes());
            input.extend_from_slice(&hello.client_version.to_be_bytes());
            input.extend_from_slice(hello.random);
            for field in [
                hello.session_id,
                hello.cipher_suites,
                hello.compression_methods,
            ] {
                input.extend_from_slice(&(field.len() as u16).to_be_bytes());
                input.extend_from_slice(field);
            }
            let pkey = PKey::hmac(&key).unwrap();
            let mut signer = Signer::new(MessageDigest::sha256(), &pkey).unwrap();
            signer.update(&input).unwrap();
            let expected = signer.sign_to_vec().unwrap();
            assert_eq!(secret.cookie(&addr, &hello).to_vec(), expected, "{addr}");
        }
    }
}
