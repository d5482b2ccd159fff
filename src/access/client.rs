//! Who a request comes from: the client's address, through the proxies the
//! operator trusts.

use std::net::IpAddr;

/// The address of the client a request comes from. The peer itself, unless
/// it is one of the `trusted` proxies: then the right-most address of
/// `X-Forwarded-For` that is not one of them (each proxy appends the address
/// it was reached from, so only the entries the trusted proxies added are
/// believed; anything to the left of them the client may have written). An
/// entry that is not an address ends the walk at the last trusted hop.
/// `forwarded_for` holds the header's values in the order they came.
/// Addresses are compared in their canonical form: an IPv4 peer of a
/// dual-stack listener (`::ffff:10.0.0.5`) is `10.0.0.5`.
pub fn client_address(peer: IpAddr, forwarded_for: &[&str], trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer.to_canonical();
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<&str> = forwarded_for
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in forwarded.iter().rev() {
        let Some(ip) = entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        else {
            break;
        };
        client = ip.to_canonical();
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let with = |xff: &'static str| [xff];
        let proxy = ip("10.0.0.5");
        assert_eq!(
            client_address(proxy, &with("203.0.113.7"), &trusted),
            ip("203.0.113.7")
        );
        // The client wrote an entry of its own: it is not believed.
        assert_eq!(
            client_address(
                proxy,
                &with("198.51.100.1, 203.0.113.7, 10.0.0.9"),
                &trusted
            ),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_address(proxy, &with("garbage, 10.0.0.9"), &trusted),
            ip("10.0.0.9"),
            "an entry that is no address ends the walk"
        );
        assert_eq!(client_address(proxy, &[], &trusted), proxy);
        // A peer that is not a trusted proxy is the client, whatever it says.
        assert_eq!(
            client_address(ip("203.0.113.9"), &with("198.51.100.1"), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(proxy, &with("198.51.100.1"), &[]),
            proxy,
            "with no trusted proxy, the header is ignored"
        );
        assert_eq!(
            client_address(proxy, &with("[2001:db8::1]:443"), &trusted),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn an_ipv4_peer_of_a_dual_stack_listener_is_its_ipv4_address() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
        assert_eq!(
            client_address(mapped, &["203.0.113.7"], &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap(),
            "the mapped proxy is trusted"
        );
        assert_eq!(
            client_address(mapped, &[], &trusted),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
    }
}
