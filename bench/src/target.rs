//! Where the load goes: a loopback-only HTTP/1.1 target.
//!
//! The benchmark must never send traffic anywhere but this machine, so every
//! address is checked here, once, before any connection is made. Names are
//! never resolved through DNS: `localhost` is mapped to 127.0.0.1 directly,
//! because a hosts file could point it elsewhere.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, bail};
use hyper::Uri;

/// A validated loopback address plus the `Host` header value to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Socket address every connection goes to; always a loopback address.
    pub addr: SocketAddr,
    /// `host:port` as the server should see it in the `Host` header.
    pub authority: String,
}

impl Target {
    /// Target for a server this tool started itself on 127.0.0.1.
    pub fn local_port(port: u16) -> Self {
        Self {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            authority: format!("127.0.0.1:{port}"),
        }
    }

    /// Parses `http://HOST[:PORT]/PATH`, a page to `POST` to (an application's login):
    /// the loopback target and the path.
    pub fn parse_loopback_page(url: &str) -> anyhow::Result<(Self, String)> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a valid URL"))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let origin = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map_or("", |a| a.as_str())
        );
        Ok((Self::parse_loopback_url(&origin)?, path))
    }

    /// Parses `http://HOST[:PORT][/]` and refuses anything that is not loopback.
    pub fn parse_loopback_url(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("--url {url:?} is not a valid URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => bail!(
                "--url {url:?}: scheme {other:?} is not supported; only plain http to loopback"
            ),
            None => bail!("--url {url:?}: missing scheme, use http://127.0.0.1:PORT"),
        }
        // A path prefix would silently change every endpoint the benchmark hits.
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            bail!("--url {url:?}: give only scheme, host and port (no path or query)");
        }
        let host = uri
            .host()
            .with_context(|| format!("--url {url:?}: missing host"))?;
        let ip = loopback_ip(host).with_context(|| {
            format!(
                "--url {url:?}: refusing host {host:?}: the benchmark only targets \
                 loopback (127.0.0.0/8, ::1 or localhost)"
            )
        })?;
        let port = uri.port_u16().unwrap_or(80);
        let authority = match ip {
            IpAddr::V6(_) => format!("[{ip}]:{port}"),
            IpAddr::V4(_) => format!("{ip}:{port}"),
        };
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            authority,
        })
    }
}

/// The loopback address `host` names, or `None` for anything else.
fn loopback_ip(host: &str) -> Option<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    // `Uri::host` keeps the brackets around IPv6 literals.
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = bare.parse().ok()?;
    ip.is_loopback().then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_forms() {
        let t = Target::parse_loopback_url("http://127.0.0.1:8080").expect("v4");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(t.authority, "127.0.0.1:8080");
        let t = Target::parse_loopback_url("http://[::1]:9000/").expect("v6");
        assert_eq!(t.addr, "[::1]:9000".parse().expect("addr"));
        assert_eq!(t.authority, "[::1]:9000");
        let t = Target::parse_loopback_url("http://LocalHost:1234").expect("localhost");
        assert_eq!(t.addr, "127.0.0.1:1234".parse().expect("addr"));
        let t = Target::parse_loopback_url("http://127.1.2.3").expect("127/8");
        assert_eq!(t.addr.port(), 80);
    }

    #[test]
    fn refuses_everything_else() {
        for url in [
            "http://10.0.0.1:8080",
            "http://192.168.1.1",
            "http://example.com",
            "http://0.0.0.0:80",
            "http://[::ffff:10.0.0.1]:80",
            "https://127.0.0.1:8443",
            "http://127.0.0.1:8080/prefix",
            "127.0.0.1:8080",
        ] {
            assert!(Target::parse_loopback_url(url).is_err(), "{url} accepted");
        }
    }
}
