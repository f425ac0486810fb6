//! Which address a request comes from, when the portal may sit behind reverse proxies.
//!
//! The login rate limit and lockout key on the client's address. Behind a reverse proxy every
//! connection comes from the proxy, so that key would lock every author at once; the proxy
//! names the real client in `X-Forwarded-For` instead. But that header is whatever the sender
//! wrote: an attacker talking to the portal directly would put a fresh address in it on every
//! attempt and never be locked. So the header is read only when the connection comes from an
//! address the operator listed with `--trusted-proxy`, and then from the right: each trusted
//! proxy appends the address it got the request from, so walking the list leftwards past
//! trusted proxies, the first address that is not one is the client, and anything to its left
//! is the client's own claim and ignored. With no `--trusted-proxy` (the default) the header is
//! never read. `Forwarded` (RFC 7239) is not read.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;

/// An address block: `192.0.2.7` (one address), `192.0.2.0/24`, `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in the block. An IPv4 address written as IPv6 (`::ffff:192.0.2.7`, what a
    /// dual-stack socket reports) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<IpNet, String> {
        let bad = || {
            format!(
                "{s:?} is not an IP address or CIDR block (e.g. 10.0.0.5, 10.0.0.0/8, fd00::/8)"
            )
        };
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; anything else unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The reverse proxies whose `X-Forwarded-For` the portal believes; empty: none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl std::fmt::Display for TrustedProxies {
    /// `none`, or the blocks comma-separated (for the startup log line).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, n) in self.0.iter().enumerate() {
            write!(f, "{}{n}", if i == 0 { "" } else { "," })?;
        }
        Ok(())
    }
}

impl TrustedProxies {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy; then the
    /// rightmost `X-Forwarded-For` entry that is not a trusted proxy. When every entry is a
    /// trusted proxy, the leftmost one (the request started at a proxy); when an entry cannot
    /// be read, the trusted hop that passed it on (a proxy that writes garbage is
    /// misconfigured, and the garbage must not pick the key).
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer.ip());
        if !self.trusts(client) {
            return client;
        }
        // Several headers are one list, in order (RFC 9110 section 5.3).
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .collect();
        for entry in entries.iter().rev() {
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`192.0.2.7:5123`,
/// `[2001:db8::1]:443`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    e.parse::<IpAddr>()
        .or_else(|_| e.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> TrustedProxies {
        TrustedProxies(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[test]
    fn blocks() {
        let n: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains("10.1.255.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()), "v4-mapped");
        let one: IpNet = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        assert!(
            !all.contains("2001:db8::1".parse().unwrap()),
            "v4 block, v6 address"
        );
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        assert!("::/0"
            .parse::<IpNet>()
            .unwrap()
            .contains("::1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "example.com",
            "10.0.0.0/8/8",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "10.1.2.3".parse::<IpNet>().unwrap().to_string(),
            "10.1.2.3/32"
        );
    }

    #[test]
    fn forwarded_for() {
        let none = TrustedProxies::default();
        let proxies = nets(&["127.0.0.2", "192.0.2.0/24"]);
        // (trusted, peer, X-Forwarded-For headers, client)
        let cases: &[(&TrustedProxies, &str, &[&str], &str)] = &[
            // Nothing trusted: the header is ignored.
            (&none, "127.0.0.2", &["203.0.113.9"], "127.0.0.2"),
            // An untrusted peer's header is ignored, even when proxies are configured.
            (&proxies, "127.0.0.1", &["203.0.113.9"], "127.0.0.1"),
            // From a trusted proxy: its entry.
            (&proxies, "127.0.0.2", &["203.0.113.9"], "203.0.113.9"),
            // Spoofed entries on the left are ignored; trusted hops on the right skipped.
            (
                &proxies,
                "127.0.0.2",
                &["6.6.6.6, 203.0.113.9, 192.0.2.10"],
                "203.0.113.9",
            ),
            (
                &proxies,
                "127.0.0.2",
                &["6.6.6.6", "203.0.113.9", "192.0.2.10"],
                "203.0.113.9",
            ),
            // Ports and IPv6.
            (&proxies, "127.0.0.2", &["203.0.113.9:5555"], "203.0.113.9"),
            (&proxies, "127.0.0.2", &["[2001:db8::7]:443"], "2001:db8::7"),
            (
                &proxies,
                "::ffff:127.0.0.2",
                &["2001:db8::7"],
                "2001:db8::7",
            ),
            // No header: the proxy itself.
            (&proxies, "127.0.0.2", &[], "127.0.0.2"),
            // Only trusted proxies listed: the leftmost.
            (
                &proxies,
                "127.0.0.2",
                &["192.0.2.1, 192.0.2.2"],
                "192.0.2.1",
            ),
            // Garbage after a trusted hop: that hop, never the garbage's choice.
            (&proxies, "127.0.0.2", &["203.0.113.9, junk"], "127.0.0.2"),
            (
                &proxies,
                "127.0.0.2",
                &["203.0.113.9, junk, 192.0.2.5"],
                "192.0.2.5",
            ),
            (&proxies, "127.0.0.2", &[""], "127.0.0.2"),
        ];
        for (trusted, p, xff, want) in cases {
            let got = trusted.client_ip(peer(p), &headers(xff));
            assert_eq!(got.to_string(), *want, "peer {p}, X-Forwarded-For {xff:?}");
        }
    }
}
