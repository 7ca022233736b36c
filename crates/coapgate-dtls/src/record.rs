//! Just enough of the DTLS 1.2 wire format (RFC 6347 §4.1, §4.2) to route
//! a datagram, to read a ClientHello before any per-peer state exists, and
//! to write a HelloVerifyRequest. Everything here is a pure function over
//! bytes: nothing allocates per peer, nothing panics on any input.

/// `ContentType.handshake`.
pub(crate) const CT_HANDSHAKE: u8 = 22;
/// `ContentType.application_data`.
pub(crate) const CT_APPLICATION_DATA: u8 = 23;
/// `HandshakeType.client_hello`.
pub(crate) const HT_CLIENT_HELLO: u8 = 1;
/// `HandshakeType.hello_verify_request`.
pub(crate) const HT_HELLO_VERIFY_REQUEST: u8 = 3;

/// Record header length: type, version, epoch, 48-bit sequence, length.
pub(crate) const RECORD_HEADER_LEN: usize = 13;
/// Handshake header length: type, length, message_seq, fragment offset and length.
pub(crate) const HANDSHAKE_HEADER_LEN: usize = 12;
/// DTLS 1.0 on the wire; RFC 6347 §4.2.1 recommends it for HelloVerifyRequest.
pub(crate) const DTLS1_0: u16 = 0xfeff;

/// A record header and its fragment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub content_type: u8,
    pub version: u16,
    pub epoch: u16,
    pub seq: u64,
    pub fragment: &'a [u8],
}

/// Splits the first record off `data`: the record and what follows it.
/// `None` when fewer bytes than its header announces are there.
pub(crate) fn split_record(data: &[u8]) -> Option<(Record<'_>, &[u8])> {
    let header = data.get(..RECORD_HEADER_LEN)?;
    let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
    let fragment = data.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len)?;
    let seq = header[5..11]
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let record = Record {
        content_type: header[0],
        version: u16::from_be_bytes([header[1], header[2]]),
        epoch: u16::from_be_bytes([header[3], header[4]]),
        seq,
        fragment,
    };
    Some((record, &data[RECORD_HEADER_LEN + len..]))
}

/// The records of a datagram, in order, up to the first malformed one.
pub(crate) fn records(mut data: &[u8]) -> impl Iterator<Item = Record<'_>> {
    std::iter::from_fn(move || {
        let (record, rest) = split_record(data)?;
        data = rest;
        Some(record)
    })
}

/// Adds `offset` to the sequence number of every epoch-0 record in a
/// datagram the server wrote (48-bit, wrapping is impossible in practice:
/// the offset is a client's record number, the count a few records).
///
/// This is what OpenSSL's own `DTLSv1_listen` does with
/// `DTLS_RECORD_LAYER_set_write_sequence`, which the safe API lacks: after
/// a stateless HelloVerifyRequest (which echoed the first ClientHello's
/// record number), the server's flight must continue from the second
/// ClientHello's record number, or a client's replay window drops the
/// ServerHello as a repeat of the HelloVerifyRequest. Epoch-0 record
/// numbers are covered by no MAC and no transcript, so this is safe.
pub(crate) fn shift_epoch0_seqs(datagram: &mut [u8], offset: u64) {
    let mut at = 0;
    while let Some((record, rest)) = datagram.get(at..).and_then(split_record) {
        let len = datagram.len() - at - rest.len();
        if record.epoch == 0 {
            let seq = (record.seq + offset) & 0xffff_ffff_ffff;
            datagram[at + 5..at + 11].copy_from_slice(&seq.to_be_bytes()[2..]);
        }
        at += len;
    }
}

/// Whether the datagram's first record is an epoch-0 handshake record whose
/// first message is a ClientHello: a (re)start of a handshake, which goes
/// through the cookie exchange whatever state exists for its source.
pub(crate) fn starts_with_client_hello(data: &[u8]) -> bool {
    matches!(split_record(data), Some((r, _))
        if r.content_type == CT_HANDSHAKE && r.epoch == 0 && r.fragment.first() == Some(&HT_CLIENT_HELLO))
}

/// Whether any record of the datagram is an encrypted (epoch ≥ 1) handshake
/// record: in a handshake, the client's Finished.
pub(crate) fn has_encrypted_handshake(data: &[u8]) -> bool {
    records(data).any(|r| r.content_type == CT_HANDSHAKE && r.epoch >= 1)
}

/// The datagram without its application-data records (and without anything
/// after a malformed record), or `None` when nothing is left. Application
/// data before a handshake completes is dropped, so that no unauthenticated
/// record can make OpenSSL fail a handshake with `unexpected_message`.
pub(crate) fn without_application_data(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while let Some((record, next)) = split_record(rest) {
        let whole = &rest[..rest.len() - next.len()];
        if record.content_type != CT_APPLICATION_DATA {
            out.extend_from_slice(whole);
        }
        rest = next;
    }
    (!out.is_empty()).then_some(out)
}

/// Why a datagram that starts like a ClientHello was not accepted as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Not an epoch-0 handshake record carrying a ClientHello.
    NotClientHello,
    /// The record version is not a DTLS one (0xfeXX).
    NotDtls,
    /// The ClientHello is fragmented (offset ≠ 0 or fragment ≠ length).
    Fragmented,
    /// A length field points past the end, or a field is out of range.
    BadLength,
}

/// A ClientHello, parsed from the first record of a datagram without copying.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientHello<'a> {
    /// The record version.
    pub record_version: u16,
    /// The record sequence number (echoed in the HelloVerifyRequest).
    pub record_seq: u64,
    /// The handshake message_seq (echoed in the HelloVerifyRequest).
    pub message_seq: u16,
    /// `client_version`.
    pub client_version: u16,
    /// `random`: 32 bytes.
    pub random: &'a [u8],
    /// `session_id`.
    pub session_id: &'a [u8],
    /// `cookie` (empty in a first ClientHello).
    pub cookie: &'a [u8],
    /// `cipher_suites` (without the length).
    pub cipher_suites: &'a [u8],
    /// `compression_methods` (without the length).
    pub compression_methods: &'a [u8],
    /// Everything after the compression methods (extensions with their length, or nothing).
    pub extensions: &'a [u8],
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let head = self.0.get(..n).ok_or(Malformed::BadLength)?;
        self.0 = &self.0[n..];
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Result<usize, Malformed> {
        let b = self.take(3)?;
        Ok((usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
    fn vec8(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// Parses the ClientHello in the first record of `datagram`. Only an
/// unfragmented ClientHello in one record is accepted (every DTLS client
/// checked sends it so: it is a few hundred bytes).
pub(crate) fn parse_client_hello(datagram: &[u8]) -> Result<ClientHello<'_>, Malformed> {
    let (record, _) = split_record(datagram).ok_or(Malformed::BadLength)?;
    if record.content_type != CT_HANDSHAKE || record.epoch != 0 {
        return Err(Malformed::NotClientHello);
    }
    if record.version >> 8 != 0xfe {
        return Err(Malformed::NotDtls);
    }
    let mut r = Reader(record.fragment);
    if r.u8()? != HT_CLIENT_HELLO {
        return Err(Malformed::NotClientHello);
    }
    let length = r.u24()?;
    let message_seq = r.u16()?;
    let fragment_offset = r.u24()?;
    let fragment_length = r.u24()?;
    if fragment_offset != 0 || fragment_length != length {
        return Err(Malformed::Fragmented);
    }
    let mut body = Reader(r.take(length)?);
    let client_version = body.u16()?;
    let random = body.take(32)?;
    let session_id = body.vec8()?;
    let cookie = body.vec8()?;
    let cipher_suites = body.vec16()?;
    let compression_methods = body.vec8()?;
    let extensions = body.0;
    if session_id.len() > 32
        || cipher_suites.is_empty()
        || cipher_suites.len() % 2 != 0
        || compression_methods.is_empty()
    {
        return Err(Malformed::BadLength);
    }
    if !extensions.is_empty() {
        let mut ext = Reader(extensions);
        let inner = ext.vec16()?;
        if !ext.0.is_empty() {
            return Err(Malformed::BadLength);
        }
        let mut each = Reader(inner);
        while !each.0.is_empty() {
            let _kind = each.u16()?;
            let _data = each.vec16()?;
        }
    }
    Ok(ClientHello {
        record_version: record.version,
        record_seq: record.seq,
        message_seq,
        client_version,
        random,
        session_id,
        cookie,
        cipher_suites,
        compression_methods,
        extensions,
    })
}

fn push_u24(out: &mut Vec<u8>, n: usize) {
    // Callers only pass lengths of a parsed record (< 2^16).
    out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
}

fn push_record_header(out: &mut Vec<u8>, content_type: u8, version: u16, seq: u64, len: usize) {
    out.push(content_type);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // epoch 0
    out.extend_from_slice(&seq.to_be_bytes()[2..]);
    out.extend_from_slice(&(len as u16).to_be_bytes());
}

fn push_handshake_header(out: &mut Vec<u8>, kind: u8, message_seq: u16, len: usize) {
    out.push(kind);
    push_u24(out, len);
    out.extend_from_slice(&message_seq.to_be_bytes());
    push_u24(out, 0);
    push_u24(out, len);
}

/// The HelloVerifyRequest answering `hello` with `cookie`, as one datagram:
/// record version and `server_version` DTLS 1.0 (RFC 6347 §4.2.1), record
/// sequence number and message_seq copied from the ClientHello (as
/// OpenSSL's own `DTLSv1_listen` does). 28 bytes plus the cookie.
pub(crate) fn hello_verify_request(hello: &ClientHello<'_>, cookie: &[u8]) -> Vec<u8> {
    let body_len = 2 + 1 + cookie.len();
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + body_len);
    push_record_header(
        &mut out,
        CT_HANDSHAKE,
        DTLS1_0,
        hello.record_seq,
        HANDSHAKE_HEADER_LEN + body_len,
    );
    push_handshake_header(
        &mut out,
        HT_HELLO_VERIFY_REQUEST,
        hello.message_seq,
        body_len,
    );
    out.extend_from_slice(&DTLS1_0.to_be_bytes());
    out.push(cookie.len() as u8);
    out.extend_from_slice(cookie);
    out
}

/// A copy of `hello` without its cookie, with the given message_seq and
/// record sequence number: what a client sends before it has a cookie.
/// Fed to a fresh OpenSSL `Ssl`, it makes OpenSSL's state machine take the
/// cookie round trip that the stateless path already did.
pub(crate) fn cookieless_copy(
    hello: &ClientHello<'_>,
    message_seq: u16,
    record_seq: u64,
) -> Vec<u8> {
    let body_len = 2
        + 32
        + 1
        + hello.session_id.len()
        + 1
        + 2
        + hello.cipher_suites.len()
        + 1
        + hello.compression_methods.len()
        + hello.extensions.len();
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + body_len);
    push_record_header(
        &mut out,
        CT_HANDSHAKE,
        hello.record_version,
        record_seq,
        HANDSHAKE_HEADER_LEN + body_len,
    );
    push_handshake_header(&mut out, HT_CLIENT_HELLO, message_seq, body_len);
    out.extend_from_slice(&hello.client_version.to_be_bytes());
    out.extend_from_slice(hello.random);
    out.push(hello.session_id.len() as u8);
    out.extend_from_slice(hello.session_id);
    out.push(0); // no cookie
    out.extend_from_slice(&(hello.cipher_suites.len() as u16).to_be_bytes());
    out.extend_from_slice(hello.cipher_suites);
    out.push(hello.compression_methods.len() as u8);
    out.extend_from_slice(hello.compression_methods);
    out.extend_from_slice(hello.extensions);
    out
}

/// `hello` re-encoded with `cookie` in place of its cookie (same record
/// sequence number and message_seq). Used by tests and the fuzz harness to
/// play a client that echoes the cookie it was given.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn with_cookie(hello: &ClientHello<'_>, cookie: &[u8]) -> Vec<u8> {
    let mut out = cookieless_copy(hello, hello.message_seq, hello.record_seq);
    // The cookie length byte sits after version, random and session id.
    let at = RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + 2 + 32 + 1 + hello.session_id.len();
    out[at] = cookie.len() as u8;
    out.splice(at + 1..at + 1, cookie.iter().copied());
    let body_len = out.len() - RECORD_HEADER_LEN - HANDSHAKE_HEADER_LEN;
    let record_len = (out.len() - RECORD_HEADER_LEN) as u16;
    out[11..13].copy_from_slice(&record_len.to_be_bytes());
    let l = [
        (body_len >> 16) as u8,
        (body_len >> 8) as u8,
        body_len as u8,
    ];
    out[RECORD_HEADER_LEN + 1..RECORD_HEADER_LEN + 4].copy_from_slice(&l);
    out[RECORD_HEADER_LEN + 9..RECORD_HEADER_LEN + 12].copy_from_slice(&l);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest ClientHello there is: one suite, null compression, no
    /// extensions, no session id, no cookie.
    fn minimal() -> Vec<u8> {
        let hello = ClientHello {
            record_version: 0xfefd,
            record_seq: 7,
            message_seq: 0,
            client_version: 0xfefd,
            random: &[0xab; 32],
            session_id: &[],
            cookie: &[],
            cipher_suites: &[0xc0, 0xa8],
            compression_methods: &[0],
            extensions: &[],
        };
        cookieless_copy(&hello, 0, 7)
    }

    #[test]
    fn a_minimal_client_hello_round_trips() {
        let bytes = minimal();
        assert_eq!(bytes.len(), 67);
        let hello = parse_client_hello(&bytes).unwrap();
        assert_eq!(hello.record_seq, 7);
        assert_eq!(hello.cipher_suites, &[0xc0, 0xa8]);
        assert!(hello.cookie.is_empty());
        assert!(starts_with_client_hello(&bytes));
    }

    #[test]
    fn the_hello_verify_request_is_smaller_than_the_smallest_client_hello() {
        let bytes = minimal();
        let hello = parse_client_hello(&bytes).unwrap();
        let hvr = hello_verify_request(&hello, &[1; 32]);
        assert_eq!(hvr.len(), 28 + 32);
        assert!(hvr.len() < bytes.len());
        let (record, rest) = split_record(&hvr).unwrap();
        assert!(rest.is_empty());
        assert_eq!(record.seq, 7);
        assert_eq!(record.fragment[0], HT_HELLO_VERIFY_REQUEST);
    }

    #[test]
    fn with_cookie_inserts_a_cookie_that_parses_back() {
        let bytes = minimal();
        let hello = parse_client_hello(&bytes).unwrap();
        let again = with_cookie(&hello, &[9; 20]);
        let parsed = parse_client_hello(&again).unwrap();
        assert_eq!(parsed.cookie, &[9; 20]);
        assert_eq!(parsed.random, hello.random);
        let stripped = cookieless_copy(&parsed, 0, 7);
        assert_eq!(stripped, bytes);
    }

    #[test]
    fn truncations_and_garbage_are_rejected_without_panicking() {
        let bytes = minimal();
        for n in 0..bytes.len() {
            assert!(parse_client_hello(&bytes[..n]).is_err(), "prefix {n}");
        }
        let mut fragmented = bytes.clone();
        fragmented[RECORD_HEADER_LEN + 8] = 1; // fragment offset
        assert_eq!(
            parse_client_hello(&fragmented).unwrap_err(),
            Malformed::Fragmented
        );
        assert!(parse_client_hello(&[0xff; 200]).is_err());
    }

    #[test]
    fn epoch0_sequence_numbers_are_shifted_and_others_left_alone() {
        let mut datagram = Vec::new();
        push_record_header(&mut datagram, CT_HANDSHAKE, 0xfefd, 1, 2);
        datagram.extend_from_slice(b"hi");
        let mut epoch1 = Vec::new();
        push_record_header(&mut epoch1, CT_HANDSHAKE, 0xfefd, 0, 1);
        epoch1[4] = 1;
        epoch1.push(0);
        datagram.extend_from_slice(&epoch1);
        shift_epoch0_seqs(&mut datagram, 5);
        let seqs: Vec<(u16, u64)> = records(&datagram).map(|r| (r.epoch, r.seq)).collect();
        assert_eq!(seqs, vec![(0, 6), (1, 0)]);
    }

    #[test]
    fn application_data_records_are_filtered_out() {
        let mut datagram = minimal();
        let mut app = Vec::new();
        push_record_header(&mut app, CT_APPLICATION_DATA, 0xfefd, 1, 3);
        app.extend_from_slice(b"abc");
        datagram.extend_from_slice(&app);
        assert_eq!(records(&datagram).count(), 2);
        assert_eq!(without_application_data(&datagram).unwrap(), minimal());
        assert!(without_application_data(&app).is_none());
    }
}
