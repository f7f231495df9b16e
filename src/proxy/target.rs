//! Where the forward proxy may connect a blind tunnel.
//!
//! A CONNECT target is parsed the way resolvers read it (so `127.1`,
//! `2130706433`, `0x7f000001`, `0177.0.0.1`, `[::ffff:127.0.0.1]` are all
//! seen as the addresses they are), a name is resolved once, and every
//! resolved address is checked against the policy: loopback, link-local,
//! unspecified, multicast and reserved addresses are internal, private
//! networks are internal unless `forward_proxy.allow_private`, and
//! `forward_proxy.allow_internal` lists exceptions. The tunnel connects to
//! the checked addresses only, so DNS cannot change the answer between the
//! check and the connect.
//!
//! Hosts are compared in one form everywhere: lowercase, without a trailing
//! dot ([`normalize_host`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// A host as modelgate compares it: trimmed, lowercase, one trailing dot
/// removed (`API.OpenAI.com.` is `api.openai.com`).
pub fn normalize_host(host: &str) -> String {
    let h = host.trim();
    h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
}

/// A parsed CONNECT host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name, normalized.
    Name(String),
}

/// Parse a host as written in a CONNECT target or a URL authority:
/// `[v6]`, a bare v6 literal, any IPv4 spelling `inet_aton` accepts, or a
/// DNS name. A host whose last label is a number must be a valid IPv4
/// address (as in the WHATWG URL parser), so no numeric spelling is ever
/// handed to the resolver to interpret.
pub fn parse_host(raw: &str) -> Result<Host, String> {
    let raw = raw.trim();
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| format!("`{raw}` is not a valid host"))?;
        return inner.parse::<Ipv6Addr>().map(|a| Host::Ip(IpAddr::V6(a))).map_err(|_| format!("`{raw}` is not a valid IPv6 address"));
    }
    let host = normalize_host(raw);
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.contains(':') {
        return host.parse::<Ipv6Addr>().map(|a| Host::Ip(IpAddr::V6(a))).map_err(|_| format!("`{raw}` is not a valid IPv6 address"));
    }
    if ends_in_number(&host) {
        return parse_ipv4_loose(&host).map(|a| Host::Ip(IpAddr::V4(a))).ok_or_else(|| format!("`{raw}` is not a valid IPv4 address"));
    }
    let valid_label = |l: &str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if host.len() > 253 || !host.split('.').all(valid_label) {
        return Err(format!("`{raw}` is not a valid host name"));
    }
    Ok(Host::Name(host))
}

/// Whether the last label is a number (decimal, or `0x` hex): then the
/// whole host is an IPv4 address in some spelling, or invalid.
fn ends_in_number(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or(host);
    if last.is_empty() {
        return false;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    last.strip_prefix("0x").is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// IPv4 the way `inet_aton(3)` reads it: one to four parts separated by
/// dots, each decimal, octal (leading `0`) or hex (`0x`); the last part
/// fills the remaining bytes (`127.1` is 127.0.0.1, `2130706433` and
/// `0x7f000001` are too).
pub fn parse_ipv4_loose(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        nums.push(parse_part(p)?);
    }
    let (last, init) = nums.split_last()?;
    if init.iter().any(|&n| n > 255) {
        return None;
    }
    let last_bits = 8 * (4 - init.len() as u32);
    if (last_bits < 32 && *last >= (1u64 << last_bits)) || *last > u64::from(u32::MAX) {
        return None;
    }
    let mut v = *last as u32;
    for (i, &n) in init.iter().enumerate() {
        v |= (n as u32) << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(v))
}

fn parse_part(p: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        if h.is_empty() {
            // inet_aton reads a bare `0x` as 0.
            return Some(0);
        }
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    // from_str_radix accepts a leading `+`; inet_aton does not.
    if digits.is_empty() || !digits.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    // Longer than any valid part: overflow guard (leading zeros aside).
    let digits = digits.trim_start_matches('0');
    if digits.len() > 16 {
        return None;
    }
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, radix).ok()
}

/// How reachable an address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Public,
    /// Private networks (RFC 1918, CGNAT, unique-local IPv6 …): refused
    /// unless `allow_private`.
    Private,
    /// This host and its link (loopback, link-local, unspecified,
    /// multicast, reserved): refused unless listed in `allow_internal`.
    Internal,
}

pub fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(a: Ipv4Addr) -> Class {
    let o = a.octets();
    let in_net = |net: [u8; 4], bits: u32| {
        let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
        u32::from(a) & mask == u32::from(Ipv4Addr::from(net)) & mask
    };
    if o[0] == 0 || o[0] == 127 || in_net([169, 254, 0, 0], 16) || o[0] >= 224 {
        // 0/8 "this network" (Linux connects 0.0.0.0 to this host),
        // loopback, link-local (cloud metadata), multicast, reserved,
        // broadcast.
        return Class::Internal;
    }
    if o[0] == 10
        || in_net([172, 16, 0, 0], 12)
        || in_net([192, 168, 0, 0], 16)
        || in_net([100, 64, 0, 0], 10)
        || in_net([192, 0, 0, 0], 24)
        || in_net([198, 18, 0, 0], 15)
    {
        return Class::Private;
    }
    Class::Public
}

fn classify_v6(a: Ipv6Addr) -> Class {
    let s = a.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = a.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if s[..6] == [0; 6] {
        // ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d.
        return Class::Internal;
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 well-known prefix: the embedded IPv4 decides.
        return classify_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        // 6to4: the embedded IPv4 decides.
        return classify_v4(embedded(s[1], s[2]));
    }
    if s[0] & 0xffc0 == 0xfe80 || s[0] & 0xff00 == 0xff00 {
        return Class::Internal;
    }
    if s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfec0 || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) {
        return Class::Private;
    }
    Class::Public
}

/// The same address in IPv4 form when it is an IPv4-mapped IPv6 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// `forward_proxy.allow_internal` and `allow_private`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Addresses and networks that may be reached whatever their class.
    pub allow_nets: Vec<IpNet>,
    /// Host names (normalized) that may reach whatever they resolve to.
    pub allow_hosts: Vec<String>,
    /// Private networks may be reached.
    pub allow_private: bool,
}

impl Policy {
    /// Parse one `allow_internal` entry: a network, an address (any IPv4
    /// spelling) or a host name.
    pub fn add(&mut self, entry: &str) -> Result<(), String> {
        let e = entry.trim();
        if let Ok(net) = e.parse::<IpNet>() {
            self.allow_nets.push(net.trunc());
            return Ok(());
        }
        match parse_host(e) {
            Ok(Host::Ip(ip)) => self.allow_nets.push(IpNet::from(canonical(ip))),
            Ok(Host::Name(n)) => self.allow_hosts.push(n),
            Err(_) => return Err(format!("`{entry}` is not a network (10.1.0.0/16), an address (127.0.0.1, ::1) or a host name")),
        }
        Ok(())
    }

    /// Whether a tunnel may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.allow_nets.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        match classify(ip) {
            Class::Public => true,
            Class::Private => self.allow_private,
            Class::Internal => false,
        }
    }

    /// Whether `host` (normalized) is listed by name.
    pub fn allows_name(&self, host: &str) -> bool {
        self.allow_hosts.iter().any(|h| *h == host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Option<String> {
        parse_ipv4_loose(s).map(|a| a.to_string())
    }

    #[test]
    fn ipv4_spellings_parse_like_inet_aton() {
        for (spelling, addr) in [
            ("127.0.0.1", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("0X7F000001", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("0x7f.0.0.1", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("017700000001", "127.0.0.1"),
            ("0", "0.0.0.0"),
            ("0.0.0.0", "0.0.0.0"),
            ("0x", "0.0.0.0"),
            ("00", "0.0.0.0"),
            ("4294967295", "255.255.255.255"),
            ("10.0.0.010", "10.0.0.8"),
            ("169.254.43518", "169.254.169.254"),
            ("192.168.0x1.1", "192.168.1.1"),
            ("000000000000000000000000000127.0.0.1", "87.0.0.1"),
            ("127.65536", "127.1.0.0"),
        ] {
            assert_eq!(v4(spelling).as_deref(), Some(addr), "{spelling}");
        }
        for bad in [
            "",
            ".",
            "1.2.3.4.5",
            "256.0.0.1",
            "1.2.3.256",
            "127.16777216",
            "1.16777216",
            "4294967296",
            "08",
            "0x1g",
            "+1",
            "1.+2",
            "1..2",
            "1.2.3.",
            "0xffffffffffffffffff",
            "99999999999999999999999",
        ] {
            assert_eq!(v4(bad), None, "{bad}");
        }
    }

    #[test]
    fn hosts_parse_in_every_spelling() {
        let ip = |s: &str| Host::Ip(s.parse().unwrap());
        assert_eq!(parse_host("127.1"), Ok(ip("127.0.0.1")));
        assert_eq!(parse_host("[::1]"), Ok(ip("::1")));
        assert_eq!(parse_host("::1"), Ok(ip("::1")));
        assert_eq!(parse_host("[::ffff:127.0.0.1]"), Ok(ip("::ffff:127.0.0.1")));
        assert_eq!(parse_host("0177.0.0.1."), Ok(ip("127.0.0.1")));
        assert_eq!(parse_host("LOCALHOST."), Ok(Host::Name("localhost".into())));
        assert_eq!(parse_host("API.OpenAI.com"), Ok(Host::Name("api.openai.com".into())));
        assert_eq!(parse_host("my_host-1.example"), Ok(Host::Name("my_host-1.example".into())));
        // Ends in a number but is no address: never handed to the resolver.
        for bad in [
            "1.2.3.4.5",
            "example.123",
            "foo.0x10000000000",
            "300.1.1.1",
            "[::1",
            "[127.0.0.1]",
            "a b",
            "a%2e",
            "",
            ".",
            "a..b",
            "fe80::1%eth0",
            "localhost:80",
        ] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
        assert_eq!(normalize_host(" Example.COM. "), "example.com");
    }

    #[test]
    fn addresses_are_classified() {
        let c = |s: &str| classify(s.parse().unwrap());
        for internal in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "0.1.2.3",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "fe80::1",
            "ff02::1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
        ] {
            assert_eq!(c(internal), Class::Internal, "{internal}");
        }
        for private in [
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "::ffff:10.1.2.3",
            "2002:c0a8:101::",
            "64:ff9b:1::1",
        ] {
            assert_eq!(c(private), Class::Private, "{private}");
        }
        for public in ["8.8.8.8", "172.32.0.1", "1.1.1.1", "2606:4700::1111", "64:ff9b::808:808", "::ffff:8.8.8.8"] {
            assert_eq!(c(public), Class::Public, "{public}");
        }
    }

    #[test]
    fn the_policy_allows_only_what_is_listed() {
        let mut p = Policy::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.permits(ip("8.8.8.8")));
        assert!(!p.permits(ip("127.0.0.1")) && !p.permits(ip("10.0.0.1")) && !p.permits(ip("::ffff:127.0.0.1")));
        p.add("127.0.0.1").unwrap();
        p.add("10.1.0.0/16").unwrap();
        p.add("Ollama.Internal.").unwrap();
        assert!(p.permits(ip("127.0.0.1")) && p.permits(ip("::ffff:127.0.0.1")));
        assert!(!p.permits(ip("127.0.0.2")) && !p.permits(ip("::1")));
        assert!(p.permits(ip("10.1.2.3")) && !p.permits(ip("10.2.0.1")));
        assert!(p.allows_name("ollama.internal") && !p.allows_name("localhost"));
        assert!(p.add("not a host").is_err());
        p.allow_private = true;
        assert!(p.permits(ip("10.2.0.1")) && p.permits(ip("fd00::1")));
        assert!(!p.permits(ip("169.254.169.254")) && !p.permits(ip("::1")), "private does not open loopback or link-local");
    }
}
