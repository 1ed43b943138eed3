//! The rules for a webhook endpoint URL and for every address its host resolves to. A URL must
//! use https, name a host, and carry no user name, password or fragment. Addresses in private,
//! loopback, link-local, unique-local and shared (CGNAT) ranges are rejected unless the endpoint
//! is allowed to reach private networks. Unspecified, multicast, broadcast, documentation and
//! reserved addresses are always rejected. An IPv6 address that embeds an IPv4 address
//! (IPv4-mapped, IPv4-compatible, NAT64, 6to4) is judged by the IPv4 address it embeds. Plain
//! http is accepted only for a loopback host of an endpoint allowed to reach private networks.
//!
//! The URL is parsed as browsers parse it (WHATWG), so a host written as a decimal, octal or
//! hexadecimal number, such as `2130706433` or `0177.1`, becomes the IPv4 address it denotes
//! and is judged as that address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use crate::error::quote_value;
use crate::Error;

/// The maximum length of an endpoint URL.
const MAX_URL_CHARS: usize = 2_048;

/// A webhook endpoint URL that passed the rules for its text. Addresses a domain resolves to are
/// checked with [`check_address`] before each connection.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    url: Url,
}

impl WebhookUrl {
    /// Parses and checks an endpoint URL. With `allow_private`, private addresses and plain http
    /// to a loopback host are accepted.
    pub fn parse(text: &str, allow_private: bool) -> Result<WebhookUrl, Error> {
        let invalid = |reason: String| Error::InvalidField {
            field: "webhook url",
            reason: format!("{}: {reason}", quote_value(text)),
        };
        if text.chars().count() > MAX_URL_CHARS {
            return Err(invalid(format!("it is longer than {MAX_URL_CHARS} characters")));
        }
        let url = Url::parse(text.trim()).map_err(|error| invalid(format!("it is not a valid URL ({error})")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("it contains a user name or password; remove them".to_owned()));
        }
        if url.fragment().is_some() {
            return Err(invalid("it contains a fragment (#...); remove it".to_owned()));
        }
        let host = url.host().ok_or_else(|| invalid("it has no host".to_owned()))?;

        match url.scheme() {
            "https" => {}
            "http" if allow_private && is_loopback_host(&host) => {}
            "http" => {
                return Err(invalid(
                    "plain http is accepted only for a loopback host of an endpoint allowed to reach private \
                     networks; use https"
                        .to_owned(),
                ))
            }
            other => return Err(invalid(format!("the scheme {other:?} is not accepted; use https"))),
        }
        let literal = match host {
            Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            Host::Domain(_) => None,
        };
        if let Some(ip) = literal {
            check_address(ip, allow_private).map_err(|error| invalid(error.reason()))?;
        }
        Ok(WebhookUrl { url })
    }

    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// Returns the host as written in the URL, without brackets around an IPv6 address.
    pub fn host(&self) -> String {
        match self.url.host() {
            Some(Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => String::new(),
        }
    }

    /// Returns the port, the scheme's default when the URL names none.
    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(443)
    }

    pub fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// Returns the scheme, host and port only, for logs and audit rows: a path or query may
    /// hold a receiver's own access token.
    pub fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WebhookUrl").field(&self.origin()).finish()
    }
}

/// Checks one address that an endpoint's host resolves to.
pub fn check_address(ip: IpAddr, allow_private: bool) -> Result<(), AddressRejected> {
    let class = match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    };
    match class {
        None => Ok(()),
        Some(class) if allow_private && class.private => Ok(()),
        Some(class) => Err(AddressRejected { ip, class: class.name, private: class.private }),
    }
}

/// An address that a webhook must not be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRejected {
    pub ip: IpAddr,
    /// The class of the address, such as "loopback" or "multicast".
    pub class: &'static str,
    /// Whether allowing private networks would accept it.
    pub private: bool,
}

impl AddressRejected {
    pub fn reason(&self) -> String {
        if self.private {
            format!(
                "address {} is {}; add the endpoint with --allow-private-network (or set \
                 KEYTURN_WEBHOOK_ALLOW_PRIVATE=1) to send webhooks there",
                self.ip, self.class
            )
        } else {
            format!("address {} is {}, which never receives webhooks", self.ip, self.class)
        }
    }
}

impl fmt::Display for AddressRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

struct Class {
    name: &'static str,
    private: bool,
}

const fn private(name: &'static str) -> Option<Class> {
    Some(Class { name, private: true })
}

const fn never(name: &'static str) -> Option<Class> {
    Some(Class { name, private: false })
}

fn is_loopback_host(host: &Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Class> {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) => never("unspecified (0.0.0.0/8)"),
        (10, _, _) => private("private (10.0.0.0/8)"),
        (100, 64..=127, _) => private("shared address space, CGNAT (100.64.0.0/10)"),
        (127, _, _) => private("loopback (127.0.0.0/8)"),
        (169, 254, _) => private("link-local (169.254.0.0/16)"),
        (172, 16..=31, _) => private("private (172.16.0.0/12)"),
        (192, 0, 0) => never("reserved for protocol assignments (192.0.0.0/24)"),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => never("reserved for documentation"),
        (192, 168, _) => private("private (192.168.0.0/16)"),
        (198, 18..=19, _) => never("reserved for benchmarking (198.18.0.0/15)"),
        (224..=239, _, _) => never("multicast (224.0.0.0/4)"),
        (240..=255, _, _) => never("reserved or broadcast (240.0.0.0/4)"),
        _ => None,
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Class> {
    if let Some(embedded) = embedded_v4(ip) {
        return classify_v4(embedded);
    }
    let segments = ip.segments();
    match segments[0] {
        _ if ip.is_unspecified() => never("unspecified (::)"),
        _ if ip.is_loopback() => private("loopback (::1)"),
        0xfe80..=0xfebf => private("link-local (fe80::/10)"),
        0xfec0..=0xfeff => private("site-local (fec0::/10)"),
        0xfc00..=0xfdff => private("unique-local (fc00::/7)"),
        0xff00..=0xffff => never("multicast (ff00::/8)"),
        0x2001 if segments[1] == 0x0db8 => never("reserved for documentation (2001:db8::/32)"),
        0x2001 if segments[1] == 0 => never("a Teredo tunnel address (2001::/32)"),
        0x0100 if segments[1..4] == [0, 0, 0] => never("a discard-only address (100::/64)"),
        0 => never("reserved (::/8)"),
        _ => None,
    }
}

/// Returns the IPv4 address embedded in an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(mapped) = ip.to_ipv4_mapped() {
        return Some(mapped);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1) {
        return Some(low(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(low(s[1], s[2]));
    }
    None
}

#[cfg(test)]
mod tests;
