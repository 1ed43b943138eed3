use super::*;

/// URLs rejected without the private-network allowance, with a word the reason must contain.
const REJECTED: &[(&str, &str)] = &[
    ("https://127.0.0.1/hook", "loopback"),
    ("https://127.8.9.10/hook", "loopback"),
    ("https://10.1.2.3/hook", "private"),
    ("https://172.16.0.1/hook", "private"),
    ("https://172.31.255.255/hook", "private"),
    ("https://192.168.1.1/hook", "private"),
    ("https://100.64.0.1/hook", "CGNAT"),
    ("https://100.127.255.254/hook", "CGNAT"),
    ("https://169.254.169.254/latest", "link-local"),
    ("https://0.0.0.0/hook", "unspecified"),
    ("https://224.0.0.1/hook", "multicast"),
    ("https://255.255.255.255/hook", "broadcast"),
    ("https://192.0.2.10/hook", "documentation"),
    ("https://[::1]/hook", "loopback"),
    ("https://[::]/hook", "unspecified"),
    ("https://[fe80::1]/hook", "link-local"),
    ("https://[fc00::1]/hook", "unique-local"),
    ("https://[fd12:3456::1]/hook", "unique-local"),
    ("https://[ff02::1]/hook", "multicast"),
    ("https://[::ffff:127.0.0.1]/hook", "loopback"),
    ("https://[::ffff:10.0.0.1]/hook", "private"),
    ("https://[::ffff:169.254.169.254]/hook", "link-local"),
    ("https://[::127.0.0.1]/hook", "loopback"),
    ("https://[64:ff9b::192.168.0.1]/hook", "private"),
    ("https://[2002:7f00:1::]/hook", "loopback"),
    ("https://[2001:db8::1]/hook", "documentation"),
    // Numeric hosts that browsers read as IPv4 addresses are judged as those addresses.
    ("https://2130706433/hook", "loopback"),
    ("https://0177.0.0.1/hook", "loopback"),
    ("https://0x7f.1/hook", "loopback"),
    ("https://017700000001/hook", "loopback"),
    ("https://127.1/hook", "loopback"),
    ("https://0/hook", "unspecified"),
    ("https://167772161/hook", "private"),
];

#[test]
fn private_addresses_rejected_by_default() {
    for (url, class) in REJECTED {
        let error = WebhookUrl::parse(url, false).unwrap_err().to_string();
        assert!(error.contains(class), "{url}: {error}");
    }
}

#[test]
fn allowance_accepts_private_only() {
    for (url, _) in REJECTED {
        let parsed = WebhookUrl::parse(url, true);
        let never = ["unspecified", "multicast", "broadcast", "documentation", "reserved", "Teredo"];
        let always_rejected = REJECTED.iter().any(|(u, class)| u == url && never.iter().any(|n| class.contains(n)));
        assert_eq!(parsed.is_err(), always_rejected, "{url}: {parsed:?}");
    }
}

#[test]
fn public_addresses_accepted() {
    for url in [
        "https://hooks.example.com/keyturn",
        "https://93.184.216.34/hook",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
        "https://100.128.0.1/hook",
        "https://172.32.0.1/hook",
        "https://example.com:8443/a?b=c",
    ] {
        assert!(WebhookUrl::parse(url, false).is_ok(), "{url}");
    }
}

#[test]
fn scheme_and_parts_checked() {
    let cases = [
        ("http://hooks.example.com/", "plain http"),
        ("http://127.0.0.1:9000/", "plain http"),
        ("ftp://hooks.example.com/", "scheme"),
        ("https://user:pw@hooks.example.com/", "password"),
        ("https://hooks.example.com/#frag", "fragment"),
        ("not a url", "not a valid URL"),
        ("https://", "not a valid URL"),
    ];
    for (url, reason) in cases {
        let error = WebhookUrl::parse(url, false).unwrap_err().to_string();
        assert!(error.contains(reason), "{url}: {error}");
    }
}

#[test]
fn plain_http_needs_loopback_and_allowance() {
    assert!(WebhookUrl::parse("http://127.0.0.1:9000/hook", true).is_ok());
    assert!(WebhookUrl::parse("http://[::1]:9000/hook", true).is_ok());
    assert!(WebhookUrl::parse("http://localhost:9000/hook", true).is_ok());
    assert!(WebhookUrl::parse("http://10.0.0.1/hook", true).is_err());
    assert!(WebhookUrl::parse("http://hooks.example.com/hook", true).is_err());
}

#[test]
fn resolved_addresses_checked() {
    let mapped: IpAddr = "::ffff:192.168.0.1".parse().unwrap();
    assert_eq!(check_address(mapped, false).unwrap_err().class, "private (192.168.0.0/16)");
    assert!(check_address(mapped, true).is_ok());
    assert!(check_address("8.8.8.8".parse().unwrap(), false).is_ok());
    assert!(check_address("ff0e::1".parse().unwrap(), true).is_err());
}

#[test]
fn origin_hides_path_and_query() {
    let url = WebhookUrl::parse("https://hooks.example.com:8443/t/abc?token=xyz", false).unwrap();

    assert_eq!(url.origin(), "https://hooks.example.com:8443");
    assert!(!format!("{url:?}").contains("xyz"));
    assert_eq!(url.host(), "hooks.example.com");
    assert_eq!(url.port(), 8443);
}
