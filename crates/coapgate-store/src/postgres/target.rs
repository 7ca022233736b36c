//! A `postgres://` store URL: the client configuration, the pool size and
//! the TLS connector.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use postgres::Client;
use postgres::config::{Config, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::url::redact;
use crate::{BUSY_TIMEOUT, StoreError};

/// The environment variable holding the database password when the URL has
/// none.
pub(crate) const PASSWORD_ENV: &str = "COAPGATE_STORE_PASSWORD";

/// Connections per pool when the URL has no `pool_size`.
pub(crate) const DEFAULT_POOL_SIZE: usize = 4;
/// The largest `pool_size` accepted.
const MAX_POOL_SIZE: usize = 64;

/// Server-side limits every connection sets at start-up (no round trip): a
/// lock wait ends after [`BUSY_TIMEOUT`] (→ [`StoreError::Busy`]); a
/// statement after 30 s; a session that stays idle inside a transaction for
/// 60 s (a frozen coapgate holding a device's row lock) is ended by the
/// server, releasing its locks. An `options=` of the URL comes after these,
/// so an operator can override them.
const SESSION_OPTIONS: &str =
    "-c lock_timeout=5000 -c statement_timeout=30000 -c idle_in_transaction_session_timeout=60000";

/// A parsed `postgres://` URL.
pub(crate) struct Target {
    config: Config,
    /// `None` for `sslmode=disable`.
    tls: Option<MakeRustlsConnect>,
    /// Connections of the general pool (the writer has one more).
    pub(crate) pool_size: usize,
    /// The URL, password redacted, for logs and errors.
    pub(crate) described: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.described)
            .field("pool_size", &self.pool_size)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

const SHAPE: &str = "expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require&pool_size=N&sslrootcert=FILE]";

impl Target {
    /// Parses `url` (its scheme `postgres` or `postgresql`, any case; `rest`
    /// is what follows `://`).
    ///
    /// coapgate's own query parameters (`pool_size`, `sslrootcert`) are
    /// taken out; `sslmode=verify-ca` and `verify-full` mean `require`
    /// (which verifies the certificate chain and host name here); the rest
    /// goes to the client (`sslmode`, `connect_timeout`, `options`,
    /// `application_name`, `host=/socket/dir`, …). The password comes from
    /// the URL or, when it has none, from [`PASSWORD_ENV`].
    pub(crate) fn parse(url: &str, rest: &str) -> Result<Self, StoreError> {
        Self::parse_with(url, rest, std::env::var(PASSWORD_ENV).ok())
    }

    /// [`parse`](Self::parse) with the environment's password given.
    fn parse_with(url: &str, rest: &str, env_password: Option<String>) -> Result<Self, StoreError> {
        let described = redact(url);
        let invalid = |reason| StoreError::InvalidUrl {
            url: described.clone(),
            reason,
        };
        if rest.contains('#') {
            return Err(invalid("fragments are not supported in a postgres URL"));
        }
        let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut root_cert = None;
        let mut passed = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = percent_decode_str(value).decode_utf8().map_err(|_| {
                invalid("a query parameter's value is not UTF-8 once percent-decoded")
            })?;
            match key {
                "pool_size" => {
                    pool_size = decoded
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_POOL_SIZE).contains(n))
                        .ok_or_else(|| invalid("pool_size is a number from 1 to 64"))?;
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(decoded.as_ref())),
                "sslmode" => {
                    let mode = match decoded.as_ref() {
                        "disable" | "prefer" | "require" => decoded.as_ref(),
                        "verify-ca" | "verify-full" => "require",
                        _ => {
                            return Err(invalid(
                                "sslmode is disable, prefer, require, verify-ca or verify-full",
                            ));
                        }
                    };
                    passed.push(format!("sslmode={mode}"));
                }
                _ => passed.push(pair.to_owned()),
            }
        }
        let mut client_url = format!("postgresql://{base}");
        if !passed.is_empty() {
            client_url.push('?');
            client_url.push_str(&passed.join("&"));
        }
        let mut config: Config = client_url.parse().map_err(|_| invalid(SHAPE))?;
        if config.get_user().is_none_or(str::is_empty) {
            return Err(invalid(
                "no user: postgres://USER@HOST/DATABASE (the password may come from COAPGATE_STORE_PASSWORD)",
            ));
        }
        if config.get_hosts().is_empty() {
            return Err(invalid("no host: postgres://USER@HOST/DATABASE"));
        }
        match (config.get_password().is_some(), env_password) {
            (false, Some(password)) if !password.is_empty() => {
                config.password(password);
            }
            (true, Some(password)) if !password.is_empty() => {
                tracing::warn!(
                    "the store URL has a password; {PASSWORD_ENV} is set too and is ignored"
                );
            }
            _ => {}
        }
        let options = match config.get_options() {
            Some(own) => format!("{SESSION_OPTIONS} {own}"),
            None => SESSION_OPTIONS.to_owned(),
        };
        config.options(&options);
        if config.get_application_name().is_none() {
            config.application_name("coapgate");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(BUSY_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            // A query to a host that vanished fails after this long instead
            // of waiting for TCP's own retransmission limit (minutes).
            config.tcp_user_timeout(Duration::from_secs(10));
        }
        let tls =
            match config.get_ssl_mode() {
                SslMode::Disable => None,
                _ => Some(tls_connector(root_cert.as_deref()).map_err(|source| {
                    StoreError::Connect {
                        url: described.clone(),
                        source,
                    }
                })?),
            };
        Ok(Target {
            config,
            tls,
            pool_size,
            described,
        })
    }

    /// Opens one connection.
    pub(crate) fn connect(&self) -> Result<Client, postgres::Error> {
        match &self.tls {
            None => self.config.connect(postgres::NoTls),
            Some(tls) => self.config.connect(tls.clone()),
        }
    }
}

/// rustls with the ring provider (as the MQTT side): the certificates of
/// `sslrootcert` when given, else the system's roots. The server's chain and
/// host name are always verified; with `sslmode=prefer` a server that
/// offers TLS must therefore present a certificate that verifies (there is
/// no silent fallback to an unverified connection).
fn tls_connector(root_cert: Option<&Path>) -> Result<MakeRustlsConnect, crate::BoxError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("sslrootcert {}: no certificate in it", path.display()).into());
            }
            for cert in certs {
                roots.add(cert)?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, "system root certificates for the PostgreSQL store");
        }
    }
    // ring, as the MQTT side; rustls 0.23.48 deprecates ring's provider only
    // for its lack of post-quantum key exchange (aws-lc-rs has it, at the
    // price of a C/CMake build).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Target, StoreError> {
        let rest = url.split_once("://").unwrap().1;
        Target::parse_with(url, rest, None)
    }

    #[test]
    fn the_password_comes_from_the_environment_unless_the_url_has_one() {
        let env = Some("from-env".to_owned());
        let url = "postgres://gate@db/x?sslmode=disable";
        let t = Target::parse_with(url, &url[11..], env.clone()).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"from-env"[..]));
        assert!(!format!("{t:?}").contains("from-env"));
        let url = "postgres://gate:in-url@db/x?sslmode=disable";
        let t = Target::parse_with(url, &url[11..], env).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"in-url"[..]));
        // An empty variable is no password.
        let url = "postgres://gate@db/x?sslmode=disable";
        let t = Target::parse_with(url, &url[11..], Some(String::new())).unwrap();
        assert_eq!(t.config.get_password(), None);
    }

    #[test]
    fn a_plain_url_gets_coapgates_session_settings() {
        let t = parse("postgres://gate:s3cret@db.example:6543/coapgate?sslmode=disable").unwrap();
        assert_eq!(t.config.get_user(), Some("gate"));
        assert_eq!(t.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(t.config.get_ports(), [6543]);
        assert_eq!(t.config.get_dbname(), Some("coapgate"));
        assert_eq!(t.config.get_ssl_mode(), SslMode::Disable);
        assert!(t.tls.is_none());
        assert_eq!(t.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(t.config.get_connect_timeout(), Some(&BUSY_TIMEOUT));
        assert!(
            t.config
                .get_options()
                .unwrap()
                .contains("lock_timeout=5000")
        );
        assert_eq!(
            t.described,
            "postgres://gate:***@db.example:6543/coapgate?sslmode=disable"
        );
        let debug = format!("{t:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn coapgates_own_parameters_are_taken_out() {
        let t = parse("postgresql://gate@db/x?pool_size=9&application_name=edge&sslmode=require")
            .unwrap();
        assert_eq!(t.pool_size, 9);
        assert_eq!(t.config.get_application_name(), Some("edge"));
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        assert!(t.tls.is_some());
        // The operator's options come after coapgate's, so they win.
        let t =
            parse("postgres://gate@db/x?sslmode=disable&options=-c%20lock_timeout%3D1000").unwrap();
        let options = t.config.get_options().unwrap();
        assert!(options.ends_with("-c lock_timeout=1000"), "{options}");
    }

    #[test]
    fn verify_modes_are_require() {
        for mode in ["verify-ca", "verify-full"] {
            let t = parse(&format!("postgres://gate@db/x?sslmode={mode}")).unwrap();
            assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        }
    }

    #[test]
    fn bad_urls_are_refused_naming_them_without_the_password() {
        for (url, why) in [
            ("postgres://gate:hunter2@db/x?pool_size=0", "pool_size"),
            ("postgres://gate:hunter2@db/x?pool_size=65", "pool_size"),
            ("postgres://gate:hunter2@db/x?sslmode=allow", "sslmode"),
            ("postgres://:hunter2@db/x", "no user"),
            ("postgres://db.example/x?password=hunter2", "no user"),
            (
                "postgres://gate:hunter2@db/x?bogus=1",
                "expected postgres://",
            ),
            ("postgres://gate:hunter2@db/x#frag", "fragments"),
        ] {
            let err = parse(url).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, StoreError::InvalidUrl { .. }),
                "{url}: {err:?}"
            );
            assert!(text.contains(why), "{url}: {text}");
            assert!(!text.contains("hunter2"), "{url}: {text}");
            assert!(!format!("{err:?}").contains("hunter2"), "{url}: {err:?}");
        }
    }

    #[test]
    fn a_missing_root_certificate_file_is_a_connect_error_naming_it() {
        let err = parse("postgres://gate:hunter2@db/x?sslmode=require&sslrootcert=/no/such.pem")
            .unwrap_err();
        assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
        let chain = format!("{err} / {}", std::error::Error::source(&err).unwrap());
        assert!(chain.contains("/no/such.pem"), "{chain}");
        assert!(!chain.contains("hunter2"), "{chain}");
    }
}
