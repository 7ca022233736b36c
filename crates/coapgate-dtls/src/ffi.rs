//! The only FFI in this crate: OpenSSL's DTLS retransmission timer, the
//! payload size that fits the MTU, the record size cap and `DTLSv1_listen`,
//! none of which the `openssl` crate wraps.
//!
//! - `DTLSv1_get_timeout` is the macro `SSL_ctrl(ssl, DTLS_CTRL_GET_TIMEOUT
//!   (73), 0, struct timeval *)`: 1 and the time left when a retransmission
//!   timer runs, 0 when none does.
//! - `DTLSv1_handle_timeout` is `SSL_ctrl(ssl, DTLS_CTRL_HANDLE_TIMEOUT (74),
//!   0, NULL)`: retransmits the last flight if OpenSSL's timer (which reads
//!   the real clock) has expired; 1 if it did, 0 if nothing was due, −1 when
//!   too many retransmissions failed.
//! - `DTLS_get_data_mtu` (OpenSSL ≥ 1.1.1) is a real function: the largest
//!   application-data payload whose record fits the configured MTU with the
//!   negotiated cipher's overhead.
//! - `SSL_set_max_send_fragment` is the macro `SSL_ctrl(ssl,
//!   SSL_CTRL_SET_MAX_SEND_FRAGMENT (52), len, NULL)`.
//! - `DTLSv1_listen(ssl, BIO_ADDR *client)` (OpenSSL ≥ 1.1.0) is a real
//!   function: it reads one datagram from the `SSL`'s read BIO; for a
//!   ClientHello whose cookie the verify callback accepts it buffers that
//!   record for the handshake, sets the handshake message numbers (read 1,
//!   write 1) and the record write sequence to the ClientHello's, as after
//!   its own HelloVerifyRequest, and returns 1; otherwise it writes a
//!   HelloVerifyRequest (generate callback) or drops the datagram and
//!   returns ≤ 0. It writes the peer address (or clears it) into `client`,
//!   which must not be null; `BIO_ADDR_new` / `BIO_ADDR_free` allocate and
//!   free one.
//!
//! Every function takes the `SslStream` by `&mut`, so while OpenSSL runs
//! (and possibly writes a retransmission into the stream's BIO) nothing else
//! in Rust can touch that `SSL` or its BIO.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::time::Duration;

use foreign_types::ForeignTypeRef as _;
use libc::{c_int, c_long, c_void, size_t};
use openssl::ssl::SslStream;

const DTLS_CTRL_GET_TIMEOUT: c_int = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;

unsafe extern "C" {
    fn DTLS_get_data_mtu(ssl: *const openssl_sys::SSL) -> size_t;
    fn DTLSv1_listen(ssl: *mut openssl_sys::SSL, client: *mut c_void) -> c_int;
    fn BIO_ADDR_new() -> *mut c_void;
    fn BIO_ADDR_free(addr: *mut c_void);
}

/// Time left on the DTLS retransmission timer, `None` when none runs.
pub(crate) fn get_timeout<S: Read + Write>(stream: &mut SslStream<S>) -> Option<Duration> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let ssl = stream.ssl().as_ptr();
    // SAFETY: `ssl` is a live `SSL*` owned by `stream`, which we borrow
    // mutably for the whole call. DTLS_CTRL_GET_TIMEOUT writes one `struct
    // timeval` through `parg` and nothing else; `tv` is a properly aligned,
    // initialised `libc::timeval` that outlives the call.
    let running = unsafe {
        openssl_sys::SSL_ctrl(
            ssl,
            DTLS_CTRL_GET_TIMEOUT,
            0,
            (&mut tv as *mut libc::timeval).cast::<c_void>(),
        )
    };
    if running != 1 {
        return None;
    }
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0).min(999_999);
    Some(Duration::from_secs(secs) + Duration::from_micros(u64::from(micros)))
}

/// Fires OpenSSL's retransmission timer if it has expired (by the real
/// clock). Returns OpenSSL's answer: 1 retransmitted, 0 nothing due,
/// negative: give up (too many retransmissions).
pub(crate) fn handle_timeout<S: Read + Write>(stream: &mut SslStream<S>) -> c_long {
    let ssl = stream.ssl().as_ptr();
    // SAFETY: `ssl` is a live `SSL*` owned by `stream`, borrowed mutably for
    // the call, so OpenSSL may write a retransmitted flight into the stream's
    // BIO (whose Rust state `stream` owns and nobody else can reach now).
    // DTLS_CTRL_HANDLE_TIMEOUT takes no argument; `parg` is null.
    unsafe { openssl_sys::SSL_ctrl(ssl, DTLS_CTRL_HANDLE_TIMEOUT, 0, std::ptr::null_mut()) }
}

/// The largest application-data payload that fits one record within the
/// MTU under the negotiated cipher (0 before a cipher is negotiated).
pub(crate) fn data_mtu<S: Read + Write>(stream: &mut SslStream<S>) -> usize {
    let ssl = stream.ssl().as_ptr();
    // SAFETY: `ssl` is a live `SSL*` owned by `stream`; DTLS_get_data_mtu
    // only reads the SSL's MTU and current cipher, and returns 0 when there
    // is no cipher yet.
    unsafe { DTLS_get_data_mtu(ssl) }
}

const SSL_CTRL_SET_MAX_SEND_FRAGMENT: c_int = 52;

/// `SSL_set_max_send_fragment`: caps the plaintext per record this `Ssl`
/// writes, which also sizes its write buffer (OpenSSL allocates ~17 KiB
/// for the 16 KiB default). Returns whether OpenSSL accepted it (512 ..=
/// 16384).
pub(crate) fn set_max_send_fragment(ssl: &mut openssl::ssl::SslRef, len: usize) -> bool {
    let Ok(len) = c_long::try_from(len) else {
        return false;
    };
    // SAFETY: `ssl` is a live `SSL*` we borrow mutably; this control takes
    // its value in `larg` and no pointer (`parg` is null).
    let ok = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            SSL_CTRL_SET_MAX_SEND_FRAGMENT,
            len,
            std::ptr::null_mut(),
        )
    };
    ok == 1
}

/// `DTLSv1_listen` on a fresh server `Ssl` whose BIO holds one datagram
/// that starts with a ClientHello with a cookie: whether OpenSSL took it
/// as the ClientHello after a cookie exchange (the next `do_handshake`
/// answers it with the ServerHello flight).
pub(crate) fn listen<S: Read + Write>(stream: &mut SslStream<S>) -> bool {
    // SAFETY: BIO_ADDR_new takes nothing and returns a newly allocated,
    // cleared BIO_ADDR that we own, or null (checked below).
    let client = unsafe { BIO_ADDR_new() };
    if client.is_null() {
        return false;
    }
    let ssl = stream.ssl().as_ptr();
    // SAFETY: `ssl` is a live `SSL*` owned by `stream`, borrowed mutably
    // for the call, so OpenSSL may read from and write to the stream's BIO
    // (whose Rust state `stream` owns and nobody else can reach now) and
    // call the context's cookie callbacks, which only read the `SSL`'s ex
    // data. `client` is a valid BIO_ADDR that lives until the free below;
    // OpenSSL writes the peer address into it or clears it, and keeps no
    // pointer to it.
    let taken = unsafe { DTLSv1_listen(ssl, client) };
    // SAFETY: `client` came from BIO_ADDR_new, is freed exactly once, and
    // nothing refers to it any more.
    unsafe { BIO_ADDR_free(client) };
    taken == 1
}
