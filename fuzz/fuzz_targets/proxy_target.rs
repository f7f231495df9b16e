//! Forward-proxy targets: host parsing (every IPv4 spelling, IPv6
//! literals, names), address classification and the allow-list policy.
#![no_main]
use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use modelgate::proxy::target::{self, Class, Host, Policy};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Where std reads a dotted quad, the inet_aton-style parser agrees.
    if let Ok(std_v4) = text.parse::<Ipv4Addr>() {
        assert_eq!(target::parse_ipv4_loose(text), Some(std_v4), "{text}");
    }
    let Ok(host) = target::parse_host(text) else { return };
    match host {
        Host::Ip(ip) => {
            let default = Policy::default();
            // The default policy never permits an internal address.
            if default.permits(ip) {
                assert_eq!(target::classify(ip), Class::Public, "{ip}");
            }
            // An IPv4-mapped address is judged as its IPv4 form.
            if let IpAddr::V4(v4) = ip {
                assert_eq!(default.permits(IpAddr::V6(v4.to_ipv6_mapped())), default.permits(ip), "{ip}");
            }
        }
        Host::Name(name) => {
            // Names come out normalized and never as a number.
            assert_eq!(name, target::normalize_host(&name));
            assert!(name.parse::<IpAddr>().is_err(), "{name}");
            let mut p = Policy::default();
            assert!(p.add(&name).is_ok());
            assert!(p.allows_name(&name));
        }
    }
});
