//! Pre-shared keys and how the server finds them.

use std::fmt;

use zeroize::Zeroizing;

/// The raw bytes of a pre-shared key (for coapgate: the ASCII bytes of the
/// PSK string a device got from `/bootstrap`).
///
/// Its `Debug` output is `Key(<redacted>)`, it has no `Display`, and its
/// bytes are overwritten with zeros when it is dropped.
#[derive(Clone)]
pub struct Key(Zeroizing<Vec<u8>>);

impl Key {
    /// Wraps key bytes (taking ownership, so no unwiped copy stays behind
    /// in the caller's `Vec`).
    pub fn new(bytes: Vec<u8>) -> Self {
        Key(Zeroizing::new(bytes))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Looks a PSK up by the identity a client presents (the ICCID), at
/// handshake time.
///
/// Called from inside OpenSSL's handshake, once per handshake that gets as
/// far as the ClientKeyExchange, so it should answer from memory (coapgate's
/// store keeps an in-memory map current). Returning `None` fails the
/// handshake. A key changed behind this trait is used by the very next
/// handshake: the server caches nothing (no session resumption either).
pub trait PskLookup: Send + Sync {
    /// The key for `identity`, or `None` if there is none.
    fn key(&self, identity: &str) -> Option<Key>;
}

impl<F> PskLookup for F
where
    F: Fn(&str) -> Option<Key> + Send + Sync,
{
    fn key(&self, identity: &str) -> Option<Key> {
        self(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let key = Key::new(b"secret-psk-123".to_vec());
        assert_eq!(format!("{key:?}"), "Key(<redacted>)");
        assert_eq!(format!("{:?}", Some(key.clone())), "Some(Key(<redacted>))");
        assert_eq!(key.as_bytes(), b"secret-psk-123");
    }
}
