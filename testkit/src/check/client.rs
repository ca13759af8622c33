//! One HTTP/1.1 request on a connection of its own, to a loopback address, within a time
//! limit; what came back, or how it failed.
//!
//! A connection per request: an instance the checker restarts closes every connection it had,
//! and a pooled connection would turn that into failures of later requests that never reached
//! the new process. The failure says whether the request may have reached a server at all:
//! without a connection it cannot have, which the invariants rely on.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Bodies above this are an error: every answer the checker reads is a few hundred bytes.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// An answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The body, when it is JSON.
    pub json: Option<serde_json::Value>,
    /// Every `Set-Cookie` value.
    pub set_cookie: Vec<String>,
    /// nginx's `X-Checker-Upstream` (the instances it tried, the last one answered).
    pub upstream: Option<String>,
    /// Whether the body is not JSON (an nginx error page rather than an instance's answer).
    pub not_json: bool,
}

impl Answer {
    /// The `error` field of a JSON error body.
    pub fn error(&self) -> Option<String> {
        self.json.as_ref()?["error"].as_str().map(str::to_owned)
    }

    /// The value of the cookie `name` the answer sets (not an emptied one, which is a
    /// deletion).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookie.iter().find_map(|set| {
            let pair = set.split(';').next()?.trim();
            let (key, value) = pair.split_once('=')?;
            (key == name && !value.is_empty()).then(|| value.to_owned())
        })
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone)]
pub enum Failure {
    /// No connection: the request reached no server.
    Refused(String),
    /// The connection was open: the request may have reached a server.
    Lost(String),
}

/// A request to send.
pub struct Call<'a> {
    pub method: Method,
    pub path: &'a str,
    pub cookie: Option<&'a str>,
    pub bearer: Option<&'a str>,
    pub json: Option<serde_json::Value>,
}

/// Sends `call` to `addr` on a new connection and reads the whole answer, all within `limit`.
pub async fn send(addr: SocketAddr, call: &Call<'_>, limit: Duration) -> Result<Answer, Failure> {
    let stream = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(Failure::Refused(e.to_string())),
        Err(_) => {
            return Err(Failure::Refused(format!(
                "connect timed out after {limit:?}"
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    let request = build(addr, call).map_err(Failure::Refused)?;
    let exchange = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        // Ends by itself once the answer is read and `sender` dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| format!("read body: {e}"))?
            .to_bytes();
        Ok::<_, String>((parts, body))
    };
    let (parts, body) = match tokio::time::timeout(limit, exchange).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Err(Failure::Lost(e)),
        Err(_) => return Err(Failure::Lost(format!("no answer within {limit:?}"))),
    };
    let json = serde_json::from_slice(&body).ok();
    let header_text = |name: &HeaderName| {
        parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    Ok(Answer {
        status: parts.status.as_u16(),
        not_json: json.is_none() && !body.is_empty(),
        json,
        set_cookie: header_text(&header::SET_COOKIE),
        upstream: header_text(&HeaderName::from_static("x-checker-upstream"))
            .into_iter()
            .next(),
    })
}

fn build(addr: SocketAddr, call: &Call<'_>) -> Result<Request<Full<Bytes>>, String> {
    let mut builder = Request::builder()
        .method(call.method.clone())
        .uri(call.path)
        .header(header::HOST, addr.to_string());
    if let Some(cookie) = call.cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    if let Some(token) = call.bearer {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| format!("bearer token: {e}"))?;
        builder = builder.header(header::AUTHORIZATION, value);
    }
    let body = match &call.json {
        Some(value) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(value.to_string())
        }
        None => Bytes::new(),
    };
    builder
        .body(Full::new(body))
        .map_err(|e| format!("build request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(set_cookie: &[&str]) -> Answer {
        Answer {
            status: 201,
            json: None,
            set_cookie: set_cookie.iter().map(|s| (*s).to_owned()).collect(),
            upstream: None,
            not_json: false,
        }
    }

    #[test]
    fn the_session_cookie_is_found_and_a_deletion_is_not_one() {
        let a = answer(&["other=1; Path=/", "keepalive_sid=abc; HttpOnly; Path=/"]);
        assert_eq!(a.cookie("keepalive_sid").as_deref(), Some("abc"));
        let cleared = answer(&["keepalive_sid=; Max-Age=0; Path=/"]);
        assert_eq!(cleared.cookie("keepalive_sid"), None);
    }

    #[tokio::test]
    async fn nothing_listening_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let call = Call {
            method: Method::GET,
            path: "/livez",
            cookie: None,
            bearer: None,
            json: None,
        };
        let failure = send(addr, &call, Duration::from_secs(1))
            .await
            .expect_err("nothing listens");
        assert!(matches!(failure, Failure::Refused(_)), "{failure:?}");
    }
}
