//! The CoAPS URL `/bootstrap` hands out.

use std::fmt;
use std::net::Ipv6Addr;
use std::ops::Deref;
use std::str::FromStr;

use crate::BootstrapError;

/// The `coapsEndpointUrl` of the `/bootstrap` answer: `coaps://HOST[:PORT]`,
/// validated so that it cannot break the comma-separated answer or a
/// device's URL parser.
///
/// HOST is a DNS name or IPv4 address (letters, digits, `-` and `.`; labels
/// of 1 to 63 characters, 253 in all) or an IPv6 address in brackets; PORT
/// is 1 to 65535. No user, path, query or fragment; no comma, white space
/// or control character anywhere. The text is kept as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CoapsUrl(String);

impl CoapsUrl {
    /// Validates `text` as a CoAPS URL.
    pub fn parse(text: &str) -> Result<Self, BootstrapError> {
        let bad = |why| Err(BootstrapError::CoapsUrl(why));
        if text.contains(',') {
            return bad("must not contain ',' (the /bootstrap answer is comma-separated)");
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("must not contain white space or control characters");
        }
        let Some(authority) = text
            .get(..8)
            .filter(|scheme| scheme.eq_ignore_ascii_case("coaps://"))
            .map(|_| &text[8..])
        else {
            return bad("must start with coaps://");
        };
        if authority.contains(['/', '?', '#', '@']) {
            return bad("must be coaps://host[:port], without user, path, query or fragment");
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(rest) => {
                let Some((ip, after)) = rest.split_once(']') else {
                    return bad("an IPv6 host needs its closing ]");
                };
                if ip.parse::<Ipv6Addr>().is_err() {
                    return bad("the host in [] is not an IPv6 address");
                }
                match after {
                    "" => (ip, None),
                    _ => match after.strip_prefix(':') {
                        Some(port) => (ip, Some(port)),
                        None => return bad("only :port may follow the IPv6 host"),
                    },
                }
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if !authority.starts_with('[') && !is_dns_name(host) {
            return bad("the host must be a DNS name, an IPv4 address or [an IPv6 address]");
        }
        if let Some(port) = port {
            if !port.bytes().all(|b| b.is_ascii_digit()) || !matches!(port.parse::<u16>(), Ok(1..))
            {
                return bad("the port must be a number from 1 to 65535");
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Letters, digits, `-` and `.`; labels of 1 to 63 characters; 253 in all.
fn is_dns_name(host: &str) -> bool {
    (1..=253).contains(&host.len())
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Default for CoapsUrl {
    /// `coaps://localhost:5684`.
    fn default() -> Self {
        Self("coaps://localhost:5684".to_owned())
    }
}

impl Deref for CoapsUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for CoapsUrl {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CoapsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for CoapsUrl {
    type Err = BootstrapError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// With the `serde` feature: from the URL text, validated.
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for CoapsUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hosts_ports_and_ipv6() {
        for good in [
            "coaps://localhost:5684",
            "coaps://coap.example.com",
            "COAPS://coap.example.com:5684",
            "coaps://10.0.0.1:5684",
            "coaps://[2001:db8::1]:5684",
            "coaps://[::1]",
        ] {
            assert_eq!(CoapsUrl::parse(good).unwrap().as_str(), good);
        }
        assert_eq!(
            CoapsUrl::default(),
            CoapsUrl::parse("coaps://localhost:5684").unwrap()
        );
    }

    #[test]
    fn refuses_what_would_break_the_answer_or_a_device_parser() {
        for (bad, why) in [
            ("coaps://a,b:5684", "','"),
            ("coaps://a b", "white space"),
            ("coaps://a\u{7}b", "control"),
            ("coaps://host:5684\n", "white space"),
            ("coap://host:5684", "coaps://"),
            ("https://host", "coaps://"),
            ("coaps://", "host"),
            ("coaps://host/path", "path"),
            ("coaps://user@host", "user"),
            ("coaps://host?x", "query"),
            ("coaps://host:0", "port"),
            ("coaps://host:65536", "port"),
            ("coaps://host:+1", "port"),
            ("coaps://host:", "port"),
            ("coaps://ho_st", "host"),
            ("coaps://a..b", "host"),
            ("coaps://[::1", "]"),
            ("coaps://[nope]:1", "IPv6"),
            ("coaps://[::1]x", ":port"),
        ] {
            let err = CoapsUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
