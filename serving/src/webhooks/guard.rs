//! Where a webhook may go: never to this machine, its network or the cloud's metadata
//! service unless the endpoint says `allow_private = true` (a receiver on the same host or
//! network, as in the tests). A URL names a host; what it resolves to is checked at every
//! connection ([`GuardedResolver`]), so a name that resolves to a public address when the
//! endpoint is added and to `127.0.0.1` later is refused then. An address written in the
//! URL is checked before the request ([`check_url`]): the client does not resolve those.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Whether `ip` is loopback, private, link-local, shared (carrier NAT), multicast,
/// unspecified, reserved or documentation space: anything but a public unicast address.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || (first == 0x0064 && v6.segments()[1] == 0xff9b) // NAT64 (embeds IPv4)
                || first == 0x2002 // 6to4 (embeds IPv4)
        }
    }
}

fn is_private_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_multicast()
        || v4.is_broadcast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 198 && (18..20).contains(&b)) // benchmarking 198.18.0.0/15
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 240 // reserved
}

/// Checks a URL before a request: `http` or `https`, a host, and, when the host is an
/// address, a public one unless `allow_private`.
pub fn check_url(url: &reqwest::Url, allow_private: bool) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme {:?} is not http or https",
            url.scheme()
        ));
    }
    let ip = match url.host() {
        None => return Err("the URL has no host".into()),
        Some(url::Host::Domain(_)) => return Ok(()),
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
    };
    if !allow_private && is_private(ip) {
        return Err(format!(
            "{ip} is a loopback, private, link-local or reserved address (set allow_private = \
             true for a receiver on this machine or network)"
        ));
    }
    Ok(())
}

/// Resolves a host name and keeps only the addresses an endpoint may reach.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || !is_private(a.ip()))
                .collect();
            if allowed.is_empty() {
                let why = if found.is_empty() {
                    format!("{host} resolves to no address")
                } else {
                    format!(
                        "{host} resolves only to loopback, private, link-local or reserved \
                         addresses (set allow_private = true for a receiver on this machine \
                         or network)"
                    )
                };
                return Err(why.into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_public_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(is_private(ip), "{private} is not public");
        }
        for public in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111"] {
            let ip: IpAddr = public.parse().unwrap();
            assert!(!is_private(ip), "{public} is public");
        }
    }

    #[test]
    fn urls_with_addresses_are_checked_before_sending() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(check_url(&url("https://crm.example.com/hook"), false).is_ok());
        assert!(check_url(&url("https://8.8.8.8/hook"), false).is_ok());
        let refused = check_url(&url("http://127.0.0.1:9000/hook"), false).unwrap_err();
        assert!(refused.contains("allow_private"), "{refused}");
        assert!(check_url(&url("http://[::1]:9000/hook"), false).is_err());
        assert!(check_url(&url("http://169.254.169.254/latest"), false).is_err());
        assert!(check_url(&url("http://127.0.0.1:9000/hook"), true).is_ok());
        assert!(check_url(&url("ftp://example.com/"), true).is_err());
    }

    #[tokio::test]
    async fn names_that_resolve_to_this_machine_are_refused() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let refused = GuardedResolver {
            allow_private: false,
        }
        .resolve(name)
        .await;
        let err = refused.err().expect("localhost refused").to_string();
        assert!(err.contains("allow_private"), "{err}");
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let allowed = GuardedResolver {
            allow_private: true,
        }
        .resolve(name)
        .await
        .expect("allowed");
        assert!(allowed.into_iter().all(|a| a.ip().is_loopback()));
    }
}
