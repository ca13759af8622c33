//! One HTTP/1.1 keep-alive connection and the cookie handling around it.
//!
//! Each load worker owns exactly one of these, so a request never waits for a
//! pool and the measured latency is the server's plus loopback, nothing else.
//! Hyper's low-level `client::conn` is used instead of a pooling client for
//! the same reason.

use std::time::Duration;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::target::Target;

/// Bodies above this are treated as an error rather than buffered: every
/// endpoint benchmarked answers with a few hundred bytes at most.
const MAX_BODY_BYTES: usize = 1 << 20;

/// A single keep-alive connection to the target.
pub struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    authority: HeaderValue,
}

impl Conn {
    /// Opens a TCP connection and performs the HTTP/1.1 handshake.
    pub async fn connect(target: &Target, timeout: Duration) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(target.addr))
            .await
            .map_err(|_| anyhow!("connect to {} timed out after {timeout:?}", target.addr))?
            .with_context(|| format!("connect to {}", target.addr))?;
        // Requests are tiny and strictly request/response: Nagle would only add delay.
        stream.set_nodelay(true).context("set TCP_NODELAY")?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        // The driver ends by itself when `sender` is dropped or the peer closes;
        // its error, if any, surfaces on the next request through `sender`.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let authority = HeaderValue::from_str(&target.authority)
            .with_context(|| format!("invalid host {:?}", target.authority))?;
        Ok(Self { sender, authority })
    }

    /// True once the server closed the connection (e.g. after `Connection: close`).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends one request and reads the whole response body, all within `timeout`.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        cookie: Option<&HeaderValue>,
        timeout: Duration,
    ) -> anyhow::Result<Response<Bytes>> {
        let extra = cookie.map(|c| (header::COOKIE, c));
        self.request_with(method, path, extra.as_slice(), timeout)
            .await
    }

    /// Like [`Conn::request`], with any extra headers (e.g. `Authorization`).
    pub async fn request_with(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, &HeaderValue)],
        timeout: Duration,
    ) -> anyhow::Result<Response<Bytes>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.authority.clone());
        for (name, value) in headers {
            builder = builder.header(name, (*value).clone());
        }
        let req = builder.body(Empty::new()).context("build request")?;
        let exchange = async {
            self.sender.ready().await.context("connection not ready")?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .context("send request")?;
            let (parts, body) = resp.into_parts();
            // The body must be drained for the connection to be reusable.
            let body = Limited::new(body, MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| anyhow!("read response body: {e}"))?
                .to_bytes();
            Ok(Response::from_parts(parts, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| anyhow!("{path}: no complete response within {timeout:?}"))?
    }
}

/// The `name=value` pair at the start of one `Set-Cookie` value, attributes dropped.
pub fn cookie_pair(set_cookie: &str) -> Option<(&str, &str)> {
    let pair = set_cookie.split(';').next()?.trim();
    let (name, value) = pair.split_once('=')?;
    let (name, value) = (name.trim(), value.trim());
    (!name.is_empty()).then_some((name, value))
}

/// The session cookie in `headers` as a ready-to-send `Cookie` header value.
///
/// Takes the cookie named `wanted`, or the first `Set-Cookie` when no name is
/// given. Values that are empty (a deletion) or not valid header text are
/// skipped: they come from the network and are never trusted blindly.
pub fn session_cookie(headers: &HeaderMap, wanted: Option<&str>) -> Option<HeaderValue> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(cookie_pair)
        .filter(|(name, value)| !value.is_empty() && wanted.is_none_or(|w| w == *name))
        .find_map(|(name, value)| HeaderValue::from_str(&format!("{name}={value}")).ok())
}

/// The cookie name of a `name=value` header value this tool built.
pub fn cookie_name(cookie: &HeaderValue) -> Option<&str> {
    cookie.to_str().ok()?.split_once('=').map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_drops_attributes() {
        assert_eq!(
            cookie_pair("ka_session=abc.def==; Path=/; HttpOnly; SameSite=Lax"),
            Some(("ka_session", "abc.def=="))
        );
        assert_eq!(cookie_pair(" sid = x "), Some(("sid", "x")));
        assert_eq!(cookie_pair("sid="), Some(("sid", "")));
        assert_eq!(cookie_pair("=x; Path=/"), None);
        assert_eq!(cookie_pair("novalue; Path=/"), None);
        assert_eq!(cookie_pair(""), None);
    }

    #[test]
    fn session_cookie_picks_first_or_named() {
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("csrf=; Max-Age=0"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("sid=s1; Path=/; HttpOnly"),
        );
        h.append(header::SET_COOKIE, HeaderValue::from_static("other=o1"));
        // The emptied cookie is a deletion, not a session.
        assert_eq!(
            session_cookie(&h, None),
            Some(HeaderValue::from_static("sid=s1"))
        );
        assert_eq!(
            session_cookie(&h, Some("other")),
            Some(HeaderValue::from_static("other=o1"))
        );
        assert_eq!(session_cookie(&h, Some("missing")), None);
        assert_eq!(session_cookie(&HeaderMap::new(), None), None);
        assert_eq!(
            cookie_name(&HeaderValue::from_static("sid=s1")),
            Some("sid")
        );
    }
}
