//! Client addresses: parsing the address a front end reports, and choosing the client of a
//! request that arrived through trusted proxies. Each proxy appends to `X-Forwarded-For` the
//! address it received the request from, so the right-most entry that is not a trusted proxy is
//! the last address that a trusted party vouched for. Entries further left were written by that
//! client and prove nothing. This module does no I/O and keeps no state. The front ends read the
//! socket peer and the header, and the keyring counts failures by the address chosen here.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;

use crate::error::quote_value;
use crate::Error;

/// The networks whose requests may name their client in `X-Forwarded-For`. Empty by default, so
/// the header is ignored and the client is the socket peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses single addresses (`10.0.0.7`, `::1`) and CIDR networks (`10.0.0.0/8`,
    /// `2001:db8::/32`). Blank entries are skipped, so a trailing comma in a list is harmless. A
    /// network with bits set after its prefix, such as `10.0.0.1/8`, is rejected because it is
    /// more likely a typo for one address than for the whole network.
    pub fn parse<S: AsRef<str>>(entries: impl IntoIterator<Item = S>) -> Result<Self, Error> {
        let mut networks = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if !entry.is_empty() {
                networks.push(parse_network(entry)?);
            }
        }
        Ok(TrustedProxies { networks })
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// Returns the trusted networks in CIDR notation.
    pub fn to_strings(&self) -> Vec<String> {
        self.networks.iter().map(IpNet::to_string).collect()
    }

    /// Returns whether `address` lies in a trusted network. An IPv4-mapped IPv6 address matches
    /// the IPv4 networks.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.networks.iter().any(|network| network.contains(&address))
    }

    /// Returns the client address of a request from `peer` (an address as the front end reports
    /// it, with or without a port) carrying the `X-Forwarded-For` header values `forwarded_for`.
    ///
    /// When the peer is not a trusted proxy, the result is `peer` unchanged. Otherwise the entries
    /// are read right to left, and the first one that is not a trusted proxy is the client. An
    /// entry that is not an address stops the walk, because a trusted proxy writes addresses, and
    /// then the client is the last trusted hop read. So is it when every entry is trusted.
    pub fn client_addr(&self, peer: &str, forwarded_for: &[&str]) -> String {
        let Some(peer_ip) = parse_ip(peer).filter(|ip| self.contains(*ip)) else {
            return peer.to_owned();
        };

        let mut last_trusted = peer_ip;
        let entries = forwarded_for.iter().rev().flat_map(|value| value.rsplit(','));
        for entry in entries {
            match parse_ip(entry) {
                Some(ip) if self.contains(ip) => last_trusted = ip,
                Some(ip) => return ip.to_string(),
                None => break,
            }
        }
        last_trusted.to_string()
    }
}

/// Parses a client address as front ends report it: `203.0.113.7`, `203.0.113.7:50312`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`, with white space around it. Returns the
/// address without the port, an IPv4-mapped IPv6 address as IPv4, or `None` for anything else.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let bracketed = text.strip_prefix('[').and_then(|rest| rest.strip_suffix(']'));
    let address = IpAddr::from_str(bracketed.unwrap_or(text))
        .ok()
        .or_else(|| SocketAddr::from_str(text).ok().map(|socket| socket.ip()))?;
    Some(address.to_canonical())
}

fn parse_network(entry: &str) -> Result<IpNet, Error> {
    let invalid = |reason: String| Error::InvalidField { field: "trusted proxy", reason };

    if !entry.contains('/') {
        let address = IpAddr::from_str(entry).map_err(|_| {
            invalid(format!(
                "{} is not an IP address or a CIDR network such as 10.0.0.0/8 or 2001:db8::/32",
                quote_value(entry)
            ))
        })?;
        return Ok(IpNet::from(address));
    }

    let network = IpNet::from_str(entry).map_err(|_| {
        invalid(format!(
            "{} is not a CIDR network: write an address, a slash and a prefix length of at most 32 for \
             IPv4 or 128 for IPv6, such as 10.0.0.0/8",
            quote_value(entry)
        ))
    })?;
    if network.addr() != network.network() {
        return Err(invalid(format!(
            "{} has bits set after its /{} prefix; write the network as {} or one address as {}",
            quote_value(entry),
            network.prefix_len(),
            network.trunc(),
            network.addr(),
        )));
    }
    Ok(network)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(entries).unwrap()
    }

    #[test]
    fn parse_ip_accepts_ports_and_brackets() {
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(parse_ip("203.0.113.7"), Some(v4));
        assert_eq!(parse_ip(" 203.0.113.7:50312 "), Some(v4));
        assert_eq!(parse_ip("2001:db8::1"), Some(v6));
        assert_eq!(parse_ip("[2001:db8::1]"), Some(v6));
        assert_eq!(parse_ip("[2001:db8::1]:443"), Some(v6));
        assert_eq!(parse_ip("::ffff:203.0.113.7"), Some(v4));
    }

    #[test]
    fn parse_ip_rejects_other_text() {
        for text in ["", "unknown", "_hidden", "203.0.113", "203.0.113.7:99999", "example.com:80", "[203.0.113.7"] {
            assert_eq!(parse_ip(text), None, "{text:?}");
        }
    }

    #[test]
    fn parse_accepts_addresses_and_networks() {
        let trusted = proxies(&["10.0.0.0/8", " 192.0.2.1 ", "", "2001:db8::/32", "::1"]);
        assert_eq!(trusted.to_strings(), ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32", "::1/128"]);
        assert!(trusted.contains("10.200.0.1".parse().unwrap()));
        assert!(trusted.contains("192.0.2.1".parse().unwrap()));
        assert!(!trusted.contains("192.0.2.2".parse().unwrap()));
        assert!(trusted.contains("2001:db8:ffff::5".parse().unwrap()));
        assert!(trusted.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!trusted.contains("2001:db9::1".parse().unwrap()));
    }

    #[test]
    fn parse_rejects_bad_entries_naming_them() {
        for entry in ["10.0.0.300", "proxy.internal", "10.0.0.0/33", "2001:db8::/129", "10.0.0.0/", "/8"] {
            let message = TrustedProxies::parse([entry]).unwrap_err().to_string();
            assert!(message.contains(&format!("{entry:?}")), "{message}");
            assert!(message.starts_with("invalid trusted proxy: "), "{message}");
        }
    }

    #[test]
    fn parse_rejects_host_bits_with_fix() {
        let message = TrustedProxies::parse(["10.0.0.1/8"]).unwrap_err().to_string();
        assert!(message.contains("10.0.0.0/8"), "{message}");
        assert!(message.contains("10.0.0.1"), "{message}");
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(trusted.client_addr("203.0.113.7:50312", &["198.51.100.1"]), "203.0.113.7:50312");
        assert_eq!(TrustedProxies::default().client_addr("10.0.0.1:80", &["198.51.100.1"]), "10.0.0.1:80");
    }

    #[test]
    fn trusted_peer_names_right_most_untrusted_entry() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let client = trusted.client_addr("10.0.0.1:80", &["1.1.1.1, 198.51.100.1", "10.0.0.2"]);
        assert_eq!(client, "198.51.100.1");
        let client = trusted.client_addr("10.0.0.1:80", &["[2001:db8::7]:443, 10.0.0.3"]);
        assert_eq!(client, "2001:db8::7");
    }

    #[test]
    fn trusted_peer_without_header_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(trusted.client_addr("10.0.0.1:80", &[]), "10.0.0.1");
        assert_eq!(trusted.client_addr("10.0.0.1:80", &["10.0.0.2, 10.0.0.3"]), "10.0.0.2");
    }

    #[test]
    fn garbage_entry_stops_at_last_trusted_hop() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(trusted.client_addr("10.0.0.1:80", &["198.51.100.1, unknown, 10.0.0.9"]), "10.0.0.9");
        assert_eq!(trusted.client_addr("10.0.0.1:80", &["198.51.100.1,"]), "10.0.0.1");
    }
}
