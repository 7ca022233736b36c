//! Store URLs (spec.md §7 `[store] url`).

use std::path::PathBuf;

use crate::StoreError;

/// Where the database lives.
#[derive(Debug)]
pub(crate) enum Location {
    /// A private SQLite database in memory; nothing is persisted.
    Memory,
    /// A SQLite file; a relative path is relative to the working directory.
    File(PathBuf),
    /// A PostgreSQL database.
    #[cfg(feature = "postgres")]
    Postgres(Box<crate::postgres::Target>),
}

impl PartialEq for Location {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Location::Memory, Location::Memory) => true,
            (Location::File(a), Location::File(b)) => a == b,
            _ => false,
        }
    }
}

const EXPECTED: &str =
    "expected sqlite://FILE, sqlite:///ABSOLUTE/FILE, sqlite::memory: or memory://";

/// Parses a store URL.
///
/// - `sqlite://coapgate.db` → `coapgate.db` in the working directory;
/// - `sqlite:///var/lib/coapgate.db` → `/var/lib/coapgate.db`;
/// - `sqlite::memory:`, `sqlite://:memory:` and `memory://` → in memory;
/// - `postgres://…`, `postgresql://…` → PostgreSQL (see
///   `crate::postgres::Target`), or [`StoreError::Unsupported`] in a build
///   without the `postgres` feature;
/// - anything else → [`StoreError::InvalidUrl`] naming the URL with any
///   password redacted.
///
/// The scheme is matched case-insensitively (RFC 3986); the path is taken
/// literally (no percent-decoding). A query string or fragment is refused
/// rather than silently becoming part of a file name.
pub(crate) fn parse(url: &str) -> Result<Location, StoreError> {
    let invalid = |reason| StoreError::InvalidUrl {
        url: redact(url),
        reason,
    };
    if url.eq_ignore_ascii_case("sqlite::memory:") {
        return Ok(Location::Memory);
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid(EXPECTED));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "sqlite" => {
            if rest.is_empty() {
                return Err(invalid("no database file after sqlite://"));
            }
            if rest == ":memory:" {
                return Ok(Location::Memory);
            }
            if rest.contains(['?', '#']) {
                return Err(invalid(
                    "query strings and fragments are not supported in a sqlite URL",
                ));
            }
            let first_segment = rest.split('/').next().unwrap_or_default();
            if first_segment.contains('@') {
                return Err(invalid(
                    "a sqlite URL names a file, not a user or host (sqlite://FILE)",
                ));
            }
            if rest.ends_with('/') {
                return Err(invalid("the sqlite URL names a directory, not a file"));
            }
            Ok(Location::File(PathBuf::from(rest)))
        }
        "memory" if rest.is_empty() => Ok(Location::Memory),
        "memory" => Err(invalid("memory:// takes no path")),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => {
            crate::postgres::Target::parse(url, rest).map(|t| Location::Postgres(Box::new(t)))
        }
        #[cfg(not(feature = "postgres"))]
        "postgres" | "postgresql" => Err(StoreError::Unsupported {
            backend: "postgres".to_owned(),
        }),
        _ => Err(invalid(EXPECTED)),
    }
}

/// The URL with any password replaced by `***`: the password of the
/// `user:password@` part, and the value of any `password=` parameter (as in
/// PostgreSQL query strings and key=value connection strings).
pub(crate) fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let auth_start = scheme_end + 3;
        let rest = &out[auth_start..];
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                out.replace_range(auth_start + colon + 1..auth_start + at, "***");
            }
        }
    }
    const KEY: &str = "password=";
    let mut from = 0;
    while let Some(found) = out[from..].to_ascii_lowercase().find(KEY) {
        let value_start = from + found + KEY.len();
        let value_len = out[value_start..]
            .find(['&', ' ', ';', '#'])
            .unwrap_or(out.len() - value_start);
        out.replace_range(value_start..value_start + value_len, "***");
        from = value_start + 3;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> Result<Location, String> {
        Ok(Location::File(PathBuf::from(path)))
    }

    fn parsed(url: &str) -> Result<Location, String> {
        parse(url).map_err(|e| e.to_string())
    }

    #[test]
    fn sqlite_with_two_slashes_is_relative_to_the_working_directory() {
        assert_eq!(parsed("sqlite://coapgate.db"), file("coapgate.db"));
        assert_eq!(
            parsed("sqlite://data/coapgate.db"),
            file("data/coapgate.db")
        );
        assert_eq!(parsed("sqlite://./coapgate.db"), file("./coapgate.db"));
    }

    #[test]
    fn sqlite_with_three_slashes_is_absolute() {
        assert_eq!(
            parsed("sqlite:///var/lib/coapgate.db"),
            file("/var/lib/coapgate.db")
        );
    }

    #[test]
    fn memory_urls_persist_nothing() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "memory://",
            "MEMORY://",
        ] {
            assert_eq!(parsed(url), Ok(Location::Memory), "{url}");
        }
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        assert_eq!(parsed("SQLite://coapgate.db"), file("coapgate.db"));
    }

    #[cfg(not(feature = "postgres"))]
    #[test]
    fn postgres_is_left_out_without_its_feature() {
        for url in [
            "postgres://coapgate:s3cret@db.example/coapgate",
            "postgresql://db.example/coapgate",
        ] {
            let err = parse(url).unwrap_err();
            assert!(
                matches!(&err, StoreError::Unsupported { backend } if backend == "postgres"),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains("postgres") && text.contains("feature"),
                "{text}"
            );
            assert!(!text.contains("s3cret"), "{text}");
        }
    }

    #[test]
    fn junk_names_the_url_without_its_password() {
        for (url, shown) in [
            ("coapgate.db", "coapgate.db"),
            ("sqlite:", "sqlite:"),
            ("sqlite://", "sqlite://"),
            ("sqlite://dir/", "sqlite://dir/"),
            (
                "sqlite://coapgate.db?mode=rwc",
                "sqlite://coapgate.db?mode=rwc",
            ),
            ("memory://x", "memory://x"),
            (
                "mysql://admin:hunter2@db.example/coapgate",
                "mysql://admin:***@db.example/coapgate",
            ),
            (
                "sqlite://admin:hunter2@db.example/coapgate",
                "sqlite://admin:***@db.example/coapgate",
            ),
            (
                "redis://db.example/?user=a&password=hunter2&x=1",
                "redis://db.example/?user=a&password=***&x=1",
            ),
            (
                "host=db.example Password=hunter2 dbname=x",
                "host=db.example Password=*** dbname=x",
            ),
        ] {
            let err = parse(url).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidUrl { .. }),
                "{url}: {err:?}"
            );
            let text = err.to_string();
            assert!(text.contains(&format!("`{shown}`")), "{url}: {text}");
            assert!(!text.contains("hunter2"), "{url}: {text}");
            assert!(!format!("{err:?}").contains("hunter2"), "{url}: {err:?}");
        }
    }

    #[test]
    fn redaction_leaves_urls_without_passwords_alone() {
        for url in [
            "sqlite://coapgate.db",
            "postgres://user@db.example/x",
            "postgres://db.example/a:b@c",
        ] {
            assert_eq!(redact(url), url);
        }
        assert_eq!(redact("x://u:p@h/?password="), "x://u:***@h/?password=***");
    }
}
