//! The `/bootstrap` PSK policy (spec.md §2.4), pure and clock-injected.
//!
//! A device fetches `ICCID,PSK,coapsEndpointUrl` over plain CoAP, then opens
//! DTLS with PSK identity = ICCID and key = the PSK. This crate decides which
//! PSK it gets:
//!
//! - no PSK yet: generate one, 16 characters of `[A-Za-z0-9]` from a
//!   cryptographic RNG ([`OsPskGenerator`]);
//! - a generated PSK, and this call comes [`Policy::regenerate_after`]
//!   (5 minutes) or more after the device's previous `/bootstrap` call:
//!   generate a new one; within 5 minutes: the same one;
//! - an operator PSK ([`PskRecord::operator`], STRING or HEX, 8–256
//!   characters): never regenerated, returned as stored.
//!
//! The DTLS key is the PSK's ASCII bytes, except for an operator HEX PSK,
//! whose key is the decoded bytes ([`PskRecord::key`]).
//!
//! Nothing here reads a clock or a database: [`Policy::bootstrap`] takes
//! `now`, and one `/bootstrap` call is a [`PskUpdate`] — a value the engine
//! hands to whatever stores PSK records, which applies it in one atomic
//! read-decide-write ([`PskUpdate::apply`]) and answers with the record.
//!
//! [`Psk`] never shows its text in `Debug` and is zeroized on drop.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use coapgate_bootstrap::{CoapsUrl, OsPskGenerator, Policy, PskFormat, PskOrigin, PskRecord, answer};
//! use coapgate_model::Iccid;
//!
//! let iccid: Iccid = "8988280666000000000".parse().unwrap();
//! let policy = Policy::default();
//! let t0 = SystemTime::now();
//!
//! // First /bootstrap: a generated PSK, which is also the DTLS key.
//! let first = policy.bootstrap(t0, None, &mut OsPskGenerator);
//! assert_eq!(first.origin, PskOrigin::Generated);
//! assert_eq!(&first.key()[..], first.psk.expose().as_bytes());
//! let url: CoapsUrl = "coaps://coap.example.com:5684".parse().unwrap();
//! let body = answer(&iccid, &first.psk, &url);
//! assert!(body.starts_with(b"8988280666000000000,"));
//!
//! // Again within 5 minutes: the same PSK; 5 minutes after that call: a new one.
//! let soon = policy.bootstrap(t0 + Duration::from_secs(60), Some(&first), &mut OsPskGenerator);
//! assert_eq!(soon.psk, first.psk);
//! let later = policy.bootstrap(t0 + Duration::from_secs(360), Some(&soon), &mut OsPskGenerator);
//! assert_ne!(later.psk, first.psk);
//!
//! // An operator HEX PSK: never regenerated; its DTLS key is the decoded bytes.
//! let operator = PskRecord::operator("DEADBEEF00112233", PskFormat::Hex).unwrap();
//! assert_eq!(&operator.key()[..], [0xde, 0xad, 0xbe, 0xef, 0x00, 0x11, 0x22, 0x33]);
//! let kept = policy.bootstrap(t0 + Duration::from_secs(86_400), Some(&operator), &mut OsPskGenerator);
//! assert_eq!(kept.psk.expose(), "DEADBEEF00112233");
//! assert!(PskRecord::operator("not hex!", PskFormat::Hex).is_err());
//! ```

#![forbid(unsafe_code)]

mod url;

pub use url::CoapsUrl;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use coapgate_model::Iccid;
use rand::TryRngCore;
use rand::distr::{Alphanumeric, Distribution};
use rand::rngs::OsRng;
use zeroize::Zeroizing;

/// Length of a generated PSK.
pub const GENERATED_LEN: usize = 16;
/// Shortest operator PSK, in characters.
pub const OPERATOR_MIN_LEN: usize = 8;
/// Longest operator PSK, in characters.
pub const OPERATOR_MAX_LEN: usize = 256;

/// What is wrong with an operator PSK, or why the store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// Fewer than 8 or more than 256 characters.
    #[error("a PSK is 8 to 256 characters, this one has {0}")]
    Length(usize),
    /// A STRING PSK may hold printable ASCII except space and `,` (the
    /// `/bootstrap` answer is comma-separated).
    #[error("a STRING PSK holds printable ASCII without spaces or commas")]
    Character,
    /// A HEX PSK is an even number of hexadecimal digits.
    #[error("a HEX PSK is an even number of hexadecimal digits")]
    NotHex,
    /// A PSK format other than STRING or HEX.
    #[error("a PSK format is STRING or HEX")]
    Format,
    /// The CoAPS URL to hand out is not acceptable (the text says why).
    #[error("{0}")]
    CoapsUrl(&'static str),
}

/// A PSK as the device sees it: the text `/bootstrap` returns.
///
/// `Debug` prints `Psk(<redacted>)`; the text is zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk(Zeroizing<String>);

impl Psk {
    /// The PSK text. Handle with care: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

/// How an operator wrote a PSK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PskFormat {
    /// The text is the key (its ASCII bytes).
    String,
    /// The text is hexadecimal; the key is the decoded bytes.
    Hex,
}

impl FromStr for PskFormat {
    type Err = BootstrapError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "STRING" => Ok(Self::String),
            "HEX" => Ok(Self::Hex),
            _ => Err(BootstrapError::Format),
        }
    }
}

/// Where a PSK came from; it decides whether `/bootstrap` may replace it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PskOrigin {
    /// Generated by `/bootstrap`; replaced after the regeneration interval.
    Generated,
    /// Set by an operator; never replaced by `/bootstrap`.
    Operator(PskFormat),
}

impl PskOrigin {
    /// `GENERATED`, `STRING` or `HEX`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Generated => "GENERATED",
            Self::Operator(PskFormat::String) => "STRING",
            Self::Operator(PskFormat::Hex) => "HEX",
        }
    }
}

impl FromStr for PskOrigin {
    type Err = BootstrapError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "GENERATED" => Ok(Self::Generated),
            other => other.parse().map(Self::Operator),
        }
    }
}

/// A device's PSK and what `/bootstrap` needs to know about it.
///
/// Made only by [`operator`](Self::operator), [`restore`](Self::restore) and
/// [`Policy::bootstrap`], which validate the text and compute the DTLS key
/// once, so a record always has a key matching its origin (a HEX record
/// cannot exist with text that does not decode). The fields are public for
/// reading. `Debug` shows neither the PSK nor the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PskRecord {
    /// The PSK text.
    pub psk: Psk,
    /// Generated or operator-set.
    pub origin: PskOrigin,
    /// When the device last called `/bootstrap`, if ever.
    pub last_bootstrap: Option<SystemTime>,
    /// The DTLS key, derived from `psk` and `origin` on construction.
    key: Zeroizing<Vec<u8>>,
}

impl PskRecord {
    /// An operator PSK, validated: 8–256 characters; STRING: printable
    /// ASCII without space or comma; HEX: an even number of hex digits.
    pub fn operator(secret: &str, format: PskFormat) -> Result<Self, BootstrapError> {
        let len = secret.chars().count();
        if !(OPERATOR_MIN_LEN..=OPERATOR_MAX_LEN).contains(&len) {
            return Err(BootstrapError::Length(len));
        }
        let key = match format {
            PskFormat::String => {
                if !secret.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                    return Err(BootstrapError::Character);
                }
                secret.as_bytes().to_vec()
            }
            // `hex::decode` refuses odd lengths and non-hex digits itself.
            PskFormat::Hex => hex::decode(secret).map_err(|_| BootstrapError::NotHex)?,
        };
        Ok(Self {
            psk: Psk::new(secret.to_owned()),
            origin: PskOrigin::Operator(format),
            last_bootstrap: None,
            key: Zeroizing::new(key),
        })
    }

    /// A record read back from storage, checked like a new one (a
    /// generated PSK must be 16 alphanumeric characters).
    pub fn restore(
        secret: &str,
        origin: PskOrigin,
        last_bootstrap: Option<SystemTime>,
    ) -> Result<Self, BootstrapError> {
        let mut record = match origin {
            PskOrigin::Operator(format) => Self::operator(secret, format)?,
            PskOrigin::Generated => {
                if secret.len() != GENERATED_LEN
                    || !secret.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(BootstrapError::Character);
                }
                Self::generated(Psk::new(secret.to_owned()), None)
            }
        };
        record.last_bootstrap = last_bootstrap;
        Ok(record)
    }

    /// A generated PSK's record: the key is the text's ASCII bytes.
    fn generated(psk: Psk, last_bootstrap: Option<SystemTime>) -> Self {
        let key = Zeroizing::new(psk.expose().as_bytes().to_vec());
        Self {
            psk,
            origin: PskOrigin::Generated,
            last_bootstrap,
            key,
        }
    }

    /// The DTLS key: the PSK's ASCII bytes, or the decoded bytes of an
    /// operator HEX PSK (decoded once, on construction). Never empty: a PSK
    /// has at least 8 characters. A copy, wiped when dropped.
    pub fn key(&self) -> Zeroizing<Vec<u8>> {
        self.key.clone()
    }
}

impl fmt::Debug for PskRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PskRecord")
            .field("psk", &self.psk)
            .field("origin", &self.origin)
            .field("last_bootstrap", &self.last_bootstrap)
            .finish_non_exhaustive()
    }
}

/// Makes new PSKs.
pub trait PskGenerator: Send {
    /// A new PSK: [`GENERATED_LEN`] characters of `[A-Za-z0-9]`.
    fn generate(&mut self) -> Psk;
}

/// Generates PSKs from the operating system's cryptographic RNG, uniformly
/// over `[A-Za-z0-9]` (about 95 bits for 16 characters).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsPskGenerator;

impl PskGenerator for OsPskGenerator {
    fn generate(&mut self) -> Psk {
        let mut rng = OsRng.unwrap_err();
        let text: String = Alphanumeric
            .sample_iter(&mut rng)
            .take(GENERATED_LEN)
            .map(char::from)
            .collect();
        Psk::new(text)
    }
}

/// The regeneration rule.
///
/// With the `serde` feature it deserializes from
/// `{ regenerate_psk_after = SECONDS }` (the key the server's `[coaps]`
/// section uses); a missing key keeps the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Policy {
    /// A generated PSK is replaced when `/bootstrap` is called this long or
    /// longer after the device's previous call (5 minutes).
    #[cfg_attr(
        feature = "serde",
        serde(rename = "regenerate_psk_after", deserialize_with = "seconds")
    )]
    pub regenerate_after: Duration,
}

/// Seconds (an integer or a decimal; not negative, finite) as a duration.
#[cfg(feature = "serde")]
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = <f64 as serde::Deserialize>::deserialize(d)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            regenerate_after: Duration::from_secs(5 * 60),
        }
    }
}

impl Policy {
    /// The record after a `/bootstrap` call at `now`: the PSK to answer with
    /// and `now` as the last call.
    pub fn bootstrap(
        &self,
        now: SystemTime,
        current: Option<&PskRecord>,
        generator: &mut dyn PskGenerator,
    ) -> PskRecord {
        let keep = match current {
            None => false,
            Some(record) if record.origin != PskOrigin::Generated => true,
            Some(record) => match record.last_bootstrap {
                // Within the interval (or the clock went back): the same PSK.
                Some(previous) => now
                    .duration_since(previous)
                    .map_or(true, |d| d < self.regenerate_after),
                // Generated but never handed out by /bootstrap: hand it out.
                None => true,
            },
        };
        match current {
            Some(record) if keep => PskRecord {
                last_bootstrap: Some(now),
                ..record.clone()
            },
            // No PSK yet, or a generated one past the interval (an operator
            // PSK is always kept).
            _ => PskRecord::generated(generator.generate(), Some(now)),
        }
    }
}

/// One `/bootstrap` call, as a write for whatever stores PSK records.
///
/// The engine decides nothing from a possibly stale copy of the record:
/// the store reads the current record, calls [`apply`](Self::apply), and
/// writes the result, in one transaction (an operator setting a PSK at the
/// same moment is ordered before or after, never lost). The fresh PSK to use
/// if one is needed travels with the update, so the store needs no RNG, and
/// an update applied twice gives the same record.
///
/// `Debug` shows the device and the time, never the candidate PSK.
#[derive(Clone, PartialEq, Eq)]
pub struct PskUpdate {
    /// The device calling `/bootstrap`.
    pub iccid: Iccid,
    /// When it called (the receive time of the request).
    pub at: SystemTime,
    /// The regeneration rule in force.
    pub policy: Policy,
    /// The PSK to hand out if the rule says a new one is due.
    candidate: Psk,
}

impl PskUpdate {
    /// An update for `iccid` at `at`, with a freshly generated candidate.
    pub fn new(
        iccid: Iccid,
        at: SystemTime,
        policy: Policy,
        generator: &mut dyn PskGenerator,
    ) -> Self {
        Self {
            iccid,
            at,
            policy,
            candidate: generator.generate(),
        }
    }

    /// The record to store, given the one stored now.
    pub fn apply(&self, current: Option<&PskRecord>) -> PskRecord {
        let mut candidate = Candidate(Some(self.candidate.clone()));
        self.policy.bootstrap(self.at, current, &mut candidate)
    }
}

impl fmt::Debug for PskUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PskUpdate")
            .field("iccid", &self.iccid)
            .field("at", &self.at)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The candidate of a [`PskUpdate`] as a one-shot generator.
struct Candidate(Option<Psk>);

impl PskGenerator for Candidate {
    fn generate(&mut self) -> Psk {
        // `Policy::bootstrap` generates at most once per call.
        self.0.take().unwrap_or_else(|| OsPskGenerator.generate())
    }
}

/// The `/bootstrap` answer: `ICCID,PSK,coapsEndpointUrl`. None of the
/// three can hold a comma: an ICCID is digits, a PSK refuses commas, and so
/// does a [`CoapsUrl`].
pub fn answer(iccid: &Iccid, psk: &Psk, coaps_url: &CoapsUrl) -> Zeroizing<Vec<u8>> {
    let mut body =
        Vec::with_capacity(iccid.as_str().len() + psk.expose().len() + coaps_url.len() + 2);
    body.extend_from_slice(iccid.as_str().as_bytes());
    body.push(b',');
    body.extend_from_slice(psk.expose().as_bytes());
    body.push(b',');
    body.extend_from_slice(coaps_url.as_bytes());
    Zeroizing::new(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out "AAAAAAAAAAAAAAA1", "AAAAAAAAAAAAAAA2", …
    struct Counting(u8);
    impl PskGenerator for Counting {
        fn generate(&mut self) -> Psk {
            self.0 += 1;
            Psk::new(format!("AAAAAAAAAAAAAAA{}", self.0))
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn a_device_without_a_psk_gets_a_generated_one() {
        let record = Policy::default().bootstrap(t0(), None, &mut Counting(0));
        assert_eq!(record.psk.expose(), "AAAAAAAAAAAAAAA1");
        assert_eq!(record.origin, PskOrigin::Generated);
        assert_eq!(record.last_bootstrap, Some(t0()));
    }

    #[test]
    fn four_minutes_59_seconds_later_the_same_psk_five_minutes_later_a_new_one() {
        let policy = Policy::default();
        let mut generator = Counting(0);
        let first = policy.bootstrap(t0(), None, &mut generator);
        let same = policy.bootstrap(
            t0() + 4 * MIN + Duration::from_secs(59),
            Some(&first),
            &mut generator,
        );
        assert_eq!(same.psk, first.psk);
        // The 5 minutes count from the previous call, which was just now.
        let at_5_min_after_first = policy.bootstrap(t0() + 5 * MIN, Some(&same), &mut generator);
        assert_eq!(
            at_5_min_after_first.psk, first.psk,
            "only 1 s after the previous call"
        );
        let new = policy.bootstrap(
            t0() + 4 * MIN + Duration::from_secs(59) + 5 * MIN,
            Some(&same),
            &mut generator,
        );
        assert_eq!(new.psk.expose(), "AAAAAAAAAAAAAAA2");
        assert_eq!(new.origin, PskOrigin::Generated);
    }

    #[test]
    fn exactly_five_minutes_after_the_previous_call_regenerates() {
        let policy = Policy::default();
        let mut generator = Counting(0);
        let first = policy.bootstrap(t0(), None, &mut generator);
        let next = policy.bootstrap(t0() + 5 * MIN, Some(&first), &mut generator);
        assert_ne!(next.psk, first.psk);
    }

    #[test]
    fn an_operator_psk_is_never_regenerated() {
        let policy = Policy::default();
        let mut generator = Counting(0);
        let mut record = PskRecord::operator("0123456789abcdef", PskFormat::Hex).unwrap();
        for days in [0u64, 1, 30, 365] {
            record = policy.bootstrap(
                t0() + Duration::from_secs(days * 86_400),
                Some(&record),
                &mut generator,
            );
            assert_eq!(record.psk.expose(), "0123456789abcdef");
            assert_eq!(record.origin, PskOrigin::Operator(PskFormat::Hex));
        }
        assert_eq!(generator.0, 0, "nothing generated");
    }

    #[test]
    fn a_clock_that_went_back_keeps_the_psk() {
        let policy = Policy::default();
        let first = policy.bootstrap(t0(), None, &mut Counting(0));
        let earlier = policy.bootstrap(t0() - 10 * MIN, Some(&first), &mut Counting(5));
        assert_eq!(earlier.psk, first.psk);
    }

    #[test]
    fn the_interval_is_configurable() {
        let policy = Policy {
            regenerate_after: Duration::from_secs(2),
        };
        let mut generator = Counting(0);
        let first = policy.bootstrap(t0(), None, &mut generator);
        let next = policy.bootstrap(t0() + Duration::from_secs(2), Some(&first), &mut generator);
        assert_ne!(next.psk, first.psk);
    }

    #[test]
    fn generated_psks_are_16_alphanumeric_characters_and_differ() {
        let mut generator = OsPskGenerator;
        let a = generator.generate();
        let b = generator.generate();
        assert_eq!(a.expose().len(), GENERATED_LEN);
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        // Every class of character shows up over many draws (uniformity smoke test).
        let all: String = (0..200)
            .map(|_| generator.generate().expose().to_owned())
            .collect();
        assert!(all.bytes().any(|c| c.is_ascii_uppercase()));
        assert!(all.bytes().any(|c| c.is_ascii_lowercase()));
        assert!(all.bytes().any(|c| c.is_ascii_digit()));
    }

    #[test]
    fn operator_psks_are_validated() {
        assert!(PskRecord::operator("12345678", PskFormat::String).is_ok());
        assert_eq!(
            PskRecord::operator("1234567", PskFormat::String),
            Err(BootstrapError::Length(7))
        );
        assert_eq!(
            PskRecord::operator(&"a".repeat(257), PskFormat::String),
            Err(BootstrapError::Length(257))
        );
        assert!(PskRecord::operator(&"a".repeat(256), PskFormat::String).is_ok());
        assert_eq!(
            PskRecord::operator("with,comma", PskFormat::String),
            Err(BootstrapError::Character)
        );
        assert_eq!(
            PskRecord::operator("with space", PskFormat::String),
            Err(BootstrapError::Character)
        );
        assert_eq!(
            PskRecord::operator("0123456789abcdeg", PskFormat::Hex),
            Err(BootstrapError::NotHex)
        );
        assert_eq!(
            PskRecord::operator("0123456789abcde", PskFormat::Hex),
            Err(BootstrapError::NotHex)
        );
        assert_eq!("BASE64".parse::<PskFormat>(), Err(BootstrapError::Format));
    }

    #[test]
    fn the_dtls_key_is_ascii_or_decoded_hex() {
        let string = PskRecord::operator("secret12", PskFormat::String).unwrap();
        assert_eq!(&string.key()[..], b"secret12");
        let hex = PskRecord::operator("DEADbeef00112233", PskFormat::Hex).unwrap();
        assert_eq!(
            &hex.key()[..],
            &[0xde, 0xad, 0xbe, 0xef, 0x00, 0x11, 0x22, 0x33]
        );
        let generated = Policy::default().bootstrap(t0(), None, &mut Counting(0));
        assert_eq!(&generated.key()[..], b"AAAAAAAAAAAAAAA1");
    }

    #[test]
    fn the_answer_is_iccid_psk_url() {
        let iccid: Iccid = "8988280666000000000".parse().unwrap();
        let record = PskRecord::operator("aB3dEf7hIjKlMnOp", PskFormat::String).unwrap();
        let url = CoapsUrl::parse("coaps://coap.example.com:5684").unwrap();
        let body = answer(&iccid, &record.psk, &url);
        assert_eq!(
            &body[..],
            b"8988280666000000000,aB3dEf7hIjKlMnOp,coaps://coap.example.com:5684"
        );
    }

    #[test]
    fn debug_never_shows_the_psk() {
        let record = PskRecord::operator("hunter2hunter2", PskFormat::String).unwrap();
        let debug = format!("{record:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn an_update_applies_the_policy_to_the_record_stored_at_that_moment() {
        let iccid: Iccid = "8988280666000000000".parse().unwrap();
        let update = PskUpdate::new(iccid, t0(), Policy::default(), &mut Counting(0));
        // No record: the candidate is handed out.
        let first = update.apply(None);
        assert_eq!(first.psk.expose(), "AAAAAAAAAAAAAAA1");
        assert_eq!(first.last_bootstrap, Some(t0()));
        // Applied again (a retried write): the same answer.
        assert_eq!(update.apply(None), first);
        // An operator PSK set meanwhile wins over the candidate.
        let operator = PskRecord::operator("hunter2hunter2", PskFormat::String).unwrap();
        assert_eq!(update.apply(Some(&operator)).psk, operator.psk);
        // A generated PSK within 5 minutes is kept.
        let later = PskUpdate::new(
            update.iccid.clone(),
            t0() + 4 * MIN,
            Policy::default(),
            &mut Counting(5),
        );
        assert_eq!(later.apply(Some(&first)).psk, first.psk);
        // Debug shows no PSK.
        let debug = format!("{update:?}");
        assert!(!debug.contains("AAAA"), "{debug}");
    }

    #[test]
    fn stored_records_are_checked_when_restored() {
        assert!(PskRecord::restore("AAAAAAAAAAAAAAA1", PskOrigin::Generated, None).is_ok());
        assert!(PskRecord::restore("short", PskOrigin::Generated, None).is_err());
        assert_eq!(
            "HEX".parse::<PskOrigin>(),
            Ok(PskOrigin::Operator(PskFormat::Hex))
        );
        assert_eq!("GENERATED".parse::<PskOrigin>(), Ok(PskOrigin::Generated));
        for origin in [
            PskOrigin::Generated,
            PskOrigin::Operator(PskFormat::String),
            PskOrigin::Operator(PskFormat::Hex),
        ] {
            assert_eq!(origin.as_str().parse::<PskOrigin>(), Ok(origin));
        }
    }

    #[test]
    fn a_hex_record_whose_text_does_not_decode_cannot_be_made() {
        // What a corrupted row would hold: the store gets an error, never a
        // record with an empty (or any) key.
        let hex = PskOrigin::Operator(PskFormat::Hex);
        for bad in ["zzzzzzzzzzzzzzzz", "0123456789abcde", "0123456789abcdé0"] {
            assert_eq!(
                PskRecord::restore(bad, hex, None),
                Err(BootstrapError::NotHex),
                "{bad}"
            );
        }
        let good = PskRecord::restore("00112233445566778899", hex, None).unwrap();
        assert_eq!(good.key().len(), 10);
        // The key is kept through /bootstrap calls and never shown by Debug.
        let after = Policy::default().bootstrap(t0(), Some(&good), &mut Counting(0));
        assert_eq!(after.key(), good.key());
        assert_eq!(after.last_bootstrap, Some(t0()));
        let debug = format!("{after:?}");
        assert!(
            !debug.contains("0, 17, 34") && !debug.contains("[0,"),
            "{debug}"
        );
    }
}
