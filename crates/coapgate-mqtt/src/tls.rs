//! TLS for the broker link (`mqtts://`): rustls with the ring provider,
//! chosen explicitly, so the same build works whatever other crates of the
//! process enable in rustls. Only with the cargo feature `tls`; without it
//! a [`TlsConfig`] can be named but not used (every way to ask for TLS
//! answers [`MqttError::TlsNotBuiltIn`]).

use std::fmt;
use std::path::Path;
#[cfg(feature = "tls")]
use std::sync::Arc;

use crate::MqttError;

/// TLS settings of the broker link: which certificates to trust, and
/// optionally a client certificate.
///
/// [`Default`] trusts the system's roots (the platform's trust store,
/// through `rustls-native-certs`), loaded when the bridge starts, and sends
/// no client certificate; [`from_pem_files`](Self::from_pem_files) reads
/// and checks PEM files at once. `Debug` describes where the roots and the
/// client certificate came from, never a key. Two values are equal when
/// both are the system default, or one is a clone of the other.
#[derive(Clone, Default)]
pub struct TlsConfig {
    inner: Inner,
}

#[derive(Clone, Default)]
enum Inner {
    /// The system's roots, loaded by [`TlsConfig::client_config`].
    #[default]
    SystemRoots,
    /// A configuration built (and checked) from files.
    #[cfg(feature = "tls")]
    Loaded {
        config: Arc<rustls::ClientConfig>,
        /// For `Debug`: the files it came from.
        about: String,
    },
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        match (&self.inner, &other.inner) {
            (Inner::SystemRoots, Inner::SystemRoots) => true,
            #[cfg(feature = "tls")]
            (Inner::Loaded { config: a, .. }, Inner::Loaded { config: b, .. }) => Arc::ptr_eq(a, b),
            #[cfg(feature = "tls")]
            _ => false,
        }
    }
}

impl Eq for TlsConfig {}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::SystemRoots => f.write_str("TlsConfig(system roots, no client certificate)"),
            #[cfg(feature = "tls")]
            Inner::Loaded { about, .. } => write!(f, "TlsConfig({about})"),
        }
    }
}

impl TlsConfig {
    /// Reads and checks the TLS files of the broker link, as `[mqtt]` names
    /// them:
    ///
    /// * `ca_file`: PEM certificates to trust *instead of* the system's
    ///   roots (`None`: the system's roots, loaded now);
    /// * `cert_file` and `key_file`: the client certificate chain (PEM) and
    ///   its private key (PEM: PKCS#8, PKCS#1 or SEC1); both or neither.
    ///
    /// Every error is [`MqttError::Tls`] naming the key (`ca_file`,
    /// `cert_file`, `key_file`) and the file; nothing from a key file is
    /// ever repeated. A key that does not belong to the certificate is an
    /// error here, not at the first connection.
    pub fn from_pem_files(
        ca_file: Option<&Path>,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
    ) -> Result<Self, MqttError> {
        match (cert_file, key_file) {
            (Some(_), None) => return Err(tls_error("key_file", "required with cert_file")),
            (None, Some(_)) => return Err(tls_error("cert_file", "required with key_file")),
            _ => {}
        }
        #[cfg(feature = "tls")]
        {
            load::from_pem_files(ca_file, cert_file, key_file)
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = ca_file;
            Err(MqttError::TlsNotBuiltIn)
        }
    }

    /// The rustls client configuration (ring provider) the bridge connects
    /// with; for the default, the system's roots are loaded now.
    #[cfg(feature = "tls")]
    pub(crate) fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, MqttError> {
        match &self.inner {
            Inner::SystemRoots => load::system_roots(),
            Inner::Loaded { config, .. } => Ok(config.clone()),
        }
    }
}

fn tls_error(field: &'static str, reason: impl Into<String>) -> MqttError {
    MqttError::Tls {
        field,
        reason: reason.into(),
    }
}

#[cfg(feature = "tls")]
mod load {
    use std::path::Path;
    use std::sync::Arc;

    use rustls::pki_types::pem::{self, PemObject};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ClientConfig, RootCertStore};

    use super::{Inner, TlsConfig, tls_error};
    use crate::MqttError;

    pub(super) fn from_pem_files(
        ca_file: Option<&Path>,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
    ) -> Result<TlsConfig, MqttError> {
        let mut about = Vec::new();
        let roots = match ca_file {
            Some(path) => {
                let certs = certificates("ca_file", path)?;
                let mut roots = RootCertStore::empty();
                for (i, cert) in certs.into_iter().enumerate() {
                    roots.add(cert).map_err(|e| {
                        tls_error(
                            "ca_file",
                            format!(
                                "{}: certificate {} is not a usable CA: {e}",
                                path.display(),
                                i + 1
                            ),
                        )
                    })?;
                }
                about.push(format!("roots from {}", path.display()));
                roots
            }
            None => {
                about.push("system roots".to_owned());
                system_root_store()?
            }
        };
        let builder = builder()?.with_root_certificates(roots);
        let config = match (cert_file, key_file) {
            (Some(cert_path), Some(key_path)) => {
                let chain = certificates("cert_file", cert_path)?;
                let key = private_key(key_path)?;
                about.push(format!(
                    "client certificate {}, key {}",
                    cert_path.display(),
                    key_path.display()
                ));
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    let reason = match e {
                        rustls::Error::InconsistentKeys(_) => {
                            "does not belong to the certificate in cert_file".to_owned()
                        }
                        // rustls's texts here name the problem, never the key.
                        other => format!("not usable: {other}"),
                    };
                    tls_error("key_file", format!("{}: {reason}", key_path.display()))
                })?
            }
            _ => {
                about.push("no client certificate".to_owned());
                builder.with_no_client_auth()
            }
        };
        Ok(TlsConfig {
            inner: Inner::Loaded {
                config: Arc::new(config),
                about: about.join(", "),
            },
        })
    }

    /// A client configuration trusting the system's roots, without a client
    /// certificate.
    pub(super) fn system_roots() -> Result<Arc<ClientConfig>, MqttError> {
        let roots = system_root_store()?;
        Ok(Arc::new(
            builder()?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        ))
    }

    /// The ring provider, explicitly (never the process default), and its
    /// default protocol versions (TLS 1.3 and 1.2).
    ///
    /// rustls 0.23.48 deprecates `ring::default_provider` because ring has
    /// no post-quantum key exchange; the broker link uses classical key
    /// exchange (X25519, P-256, P-384) on purpose, to keep aws-lc-rs (a C
    /// and CMake build) out (docs/decisions.md).
    #[allow(deprecated)]
    fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, MqttError> {
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("tls", format!("rustls refused its defaults: {e}")))
    }

    fn system_root_store() -> Result<RootCertStore, MqttError> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found
                .errors
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            return Err(tls_error(
                "ca_file",
                format!(
                    "no system root certificates could be loaded{why}; \
                     give the broker's CA in ca_file"
                ),
            ));
        }
        Ok(roots)
    }

    fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, MqttError> {
        std::fs::read(path)
            .map_err(|e| tls_error(field, format!("cannot read {}: {e}", path.display())))
    }

    /// Every `CERTIFICATE` in a PEM file; at least one.
    fn certificates(
        field: &'static str,
        path: &Path,
    ) -> Result<Vec<CertificateDer<'static>>, MqttError> {
        let pem = read(field, path)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, pem::Error>>()
            .map_err(|e| tls_error(field, format!("{}: not valid PEM: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(tls_error(
                field,
                format!("{}: no PEM CERTIFICATE in it", path.display()),
            ));
        }
        Ok(certs)
    }

    /// The first private key in a PEM file. The error never quotes the file.
    pub(super) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, MqttError> {
        let pem = read("key_file", path)?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            let why = match e {
                pem::Error::NoItemsFound => "no PEM private key (PKCS#8, PKCS#1 or SEC1) in it",
                _ => "not a valid PEM private key",
            };
            tls_error("key_file", format!("{}: {why}", path.display()))
        })
    }
}

/// A connection error in words an operator can act on, when rustls is the
/// cause (a certificate the bridge does not trust, a broker that refused
/// the handshake); `None` otherwise.
#[cfg(feature = "tls")]
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        // io::Error's `source()` skips the error it wraps; look inside it.
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for candidate in [Some(e), inner].into_iter().flatten() {
            if let Some(tls) = candidate.downcast_ref::<rustls::Error>() {
                return Some(describe_rustls(tls));
            }
        }
        next = e.source();
    }
    None
}

#[cfg(feature = "tls")]
fn describe_rustls(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C};
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "TLS certificate verification failed: unknown issuer (the broker's certificate \
             is not signed by a trusted CA: check the CA file or the system's roots)"
                .to_owned()
        }
        rustls::Error::InvalidCertificate(cert) => {
            format!("TLS certificate verification failed: {cert}")
        }
        rustls::Error::AlertReceived(
            alert @ (A::BadCertificate
            | A::CertificateRequired
            | A::UnknownCA
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateExpired
            | A::AccessDenied),
        ) => format!(
            "TLS handshake refused by the broker ({alert:?}): it wants a client \
             certificate it accepts"
        ),
        other => format!("TLS: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_and_key_go_together() {
        let p = Path::new("/nonexistent");
        let e = TlsConfig::from_pem_files(None, Some(p), None).unwrap_err();
        assert!(
            matches!(
                e,
                MqttError::Tls {
                    field: "key_file",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = TlsConfig::from_pem_files(None, None, Some(p)).unwrap_err();
        assert!(
            matches!(
                e,
                MqttError::Tls {
                    field: "cert_file",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn the_default_is_the_system_roots() {
        assert_eq!(TlsConfig::default(), TlsConfig::default());
        assert_eq!(
            format!("{:?}", TlsConfig::default()),
            "TlsConfig(system roots, no client certificate)"
        );
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_the_feature_files_are_refused() {
        let e = TlsConfig::from_pem_files(Some(Path::new("/ca.pem")), None, None).unwrap_err();
        assert!(matches!(e, MqttError::TlsNotBuiltIn), "{e:?}");
    }

    #[cfg(feature = "tls")]
    mod files {
        use super::*;

        fn dir(name: &str) -> std::path::PathBuf {
            let d = std::env::temp_dir()
                .join(format!("coapgate-mqtt-tls-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            d
        }

        fn field_and_text(e: MqttError) -> (&'static str, String) {
            let text = e.to_string();
            match e {
                MqttError::Tls { field, .. } => (field, text),
                other => panic!("{other:?}"),
            }
        }

        #[test]
        fn a_missing_or_empty_file_names_its_key_and_path() {
            let d = dir("missing");
            let missing = d.join("nope.pem");
            let (field, text) =
                field_and_text(TlsConfig::from_pem_files(Some(&missing), None, None).unwrap_err());
            assert_eq!(field, "ca_file");
            assert!(
                text.contains("nope.pem") && text.contains("cannot read"),
                "{text}"
            );

            let empty = d.join("empty.pem");
            std::fs::write(&empty, "not pem at all\n").unwrap();
            let (field, text) =
                field_and_text(TlsConfig::from_pem_files(Some(&empty), None, None).unwrap_err());
            assert_eq!(field, "ca_file");
            assert!(text.contains("no PEM CERTIFICATE"), "{text}");
            std::fs::remove_dir_all(&d).unwrap();
        }

        #[test]
        fn a_bad_key_file_never_echoes_its_content() {
            let d = dir("badkey");
            let key = d.join("key.pem");
            for body in [
                "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz!!\n-----END PRIVATE KEY-----\n",
                "c2VjcmV0LWJ5dGVz\n",
            ] {
                std::fs::write(&key, body).unwrap();
                let (field, text) = field_and_text(load::private_key(&key).unwrap_err());
                assert_eq!(field, "key_file");
                assert!(!text.contains("c2VjcmV0"), "{text}");
                assert!(text.contains("key.pem"), "{text}");
            }
            std::fs::remove_dir_all(&d).unwrap();
        }

        #[test]
        fn rustls_errors_are_described() {
            let io = std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            );
            let text = describe(&io).unwrap();
            assert!(
                text.contains("certificate verification failed: unknown issuer"),
                "{text}"
            );
            let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
            assert_eq!(describe(&plain), None);
        }
    }
}
