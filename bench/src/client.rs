//! One HTTP/1.1 keep-alive connection and the cookie handling around it.
//!
//! Each load worker owns exactly one of these, so a request never waits for a
//! pool and the measured latency is the server's plus loopback, nothing else.
//!
//! The exchange is written here over `httparse` rather than through hyper's
//! client: the generator shares the machine's cores with the server it
//! measures, and every microsecond it spends per request is one the server
//! does not get. Hyper's connection wants a driver task of its own (a wake-up
//! across tasks per request) and builds a request and a body stream for each;
//! here one task writes the request from a reused buffer and reads the answer
//! into another. Only what the benchmarked endpoints send is read: a body of a
//! `Content-Length`, a chunked one, or one up to the connection's close.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::target::Target;

/// Bodies above this are treated as an error rather than buffered: every
/// endpoint benchmarked answers with a few hundred bytes at most.
const MAX_BODY_BYTES: usize = 1 << 20;
/// The most an answer's head may take, and the most headers it may have.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

/// A single keep-alive connection to the target.
pub struct Conn {
    stream: TcpStream,
    authority: String,
    /// The request being written, reused from one to the next.
    out: Vec<u8>,
    /// What was read and not yet taken: the answer being read.
    input: Vec<u8>,
    /// The server closed the connection, said it would, or an exchange failed
    /// half-way (the connection's state is then unknown).
    closed: bool,
}

/// How an answer's body is delimited.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

impl Conn {
    /// Opens a TCP connection.
    pub async fn connect(target: &Target, timeout: Duration) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(target.addr))
            .await
            .map_err(|_| anyhow!("connect to {} timed out after {timeout:?}", target.addr))?
            .with_context(|| format!("connect to {}", target.addr))?;
        // Requests are tiny and strictly request/response: Nagle would only add delay.
        stream.set_nodelay(true).context("set TCP_NODELAY")?;
        HeaderValue::from_str(&target.authority)
            .with_context(|| format!("invalid host {:?}", target.authority))?;
        Ok(Self {
            stream,
            authority: target.authority.clone(),
            out: Vec::with_capacity(512),
            input: Vec::with_capacity(4096),
            closed: false,
        })
    }

    /// True once the server closed the connection (e.g. after `Connection: close`)
    /// or an exchange on it failed.
    pub fn is_closed(&self) -> bool {
        self.closed
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
        if self.closed {
            bail!("{path}: the connection is closed");
        }
        let result = tokio::time::timeout(timeout, self.exchange(&method, path, headers))
            .await
            .map_err(|_| anyhow!("{path}: no complete response within {timeout:?}"))
            .and_then(|answer| answer);
        if result.is_err() {
            self.closed = true;
        }
        result
    }

    async fn exchange(
        &mut self,
        method: &Method,
        path: &str,
        headers: &[(HeaderName, &HeaderValue)],
    ) -> anyhow::Result<Response<Bytes>> {
        self.out.clear();
        for part in [
            method.as_str(),
            " ",
            path,
            " HTTP/1.1\r\nhost: ",
            &self.authority,
        ] {
            self.out.extend_from_slice(part.as_bytes());
        }
        self.out.extend_from_slice(b"\r\n");
        for (name, value) in headers {
            self.out.extend_from_slice(name.as_str().as_bytes());
            self.out.extend_from_slice(b": ");
            self.out.extend_from_slice(value.as_bytes());
            self.out.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        self.stream
            .write_all(&self.out)
            .await
            .context("send request")?;

        let (head_len, mut response, framing) = loop {
            if let Some(head) = parse_head(&self.input, method)? {
                break head;
            }
            if self.input.len() > MAX_HEAD_BYTES {
                bail!("response head larger than {MAX_HEAD_BYTES} bytes");
            }
            if self.fill().await? == 0 {
                bail!("the server closed the connection before answering");
            }
        };
        self.input.drain(..head_len);
        let body = match framing {
            Framing::Length(len) => {
                if len > MAX_BODY_BYTES {
                    bail!("response body of {len} bytes");
                }
                while self.input.len() < len {
                    if self.fill().await? == 0 {
                        bail!("the server closed the connection within the body");
                    }
                }
                let body = Bytes::copy_from_slice(&self.input[..len]);
                self.input.drain(..len);
                body
            }
            Framing::Chunked => self.read_chunked().await?,
            Framing::UntilClose => {
                while self.fill().await? > 0 {
                    if self.input.len() > MAX_BODY_BYTES {
                        bail!("response body above {MAX_BODY_BYTES} bytes");
                    }
                }
                self.closed = true;
                Bytes::from(std::mem::take(&mut self.input))
            }
        };
        let closes = response
            .headers()
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if closes {
            self.closed = true;
        }
        *response.body_mut() = body;
        Ok(response)
    }

    /// Reads what the server sent next onto the input; 0 once it closed.
    async fn fill(&mut self) -> anyhow::Result<usize> {
        self.input.reserve(4096);
        let read = self
            .stream
            .read_buf(&mut self.input)
            .await
            .context("read response")?;
        if read == 0 {
            self.closed = true;
        }
        Ok(read)
    }

    /// A chunked body, its chunks joined; its trailers, if any, are skipped.
    async fn read_chunked(&mut self) -> anyhow::Result<Bytes> {
        let mut body = Vec::new();
        loop {
            let (size_len, size) = loop {
                match httparse::parse_chunk_size(&self.input) {
                    Ok(httparse::Status::Complete(found)) => break found,
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => bail!("malformed chunk size"),
                }
                if self.fill().await? == 0 {
                    bail!("the server closed the connection within a chunked body");
                }
            };
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if body.len().saturating_add(size) > MAX_BODY_BYTES {
                bail!("response body above {MAX_BODY_BYTES} bytes");
            }
            if size == 0 {
                self.input.drain(..size_len);
                // Trailers, if any, then the empty line that ends the body.
                loop {
                    if let Some(end) = find(&self.input, b"\r\n") {
                        self.input.drain(..end + 2);
                        if end == 0 {
                            return Ok(Bytes::from(body));
                        }
                    } else if self.fill().await? == 0 {
                        bail!("the server closed the connection within a chunked body");
                    }
                }
            }
            // The chunk and the line end after it.
            while self.input.len() < size_len + size + 2 {
                if self.fill().await? == 0 {
                    bail!("the server closed the connection within a chunk");
                }
            }
            body.extend_from_slice(&self.input[size_len..size_len + size]);
            self.input.drain(..size_len + size + 2);
        }
    }
}

/// The answer's head, once `input` holds all of it: its length, the response
/// with its status and headers (the body still empty), and how its body ends.
fn parse_head(
    input: &[u8],
    method: &Method,
) -> anyhow::Result<Option<(usize, Response<Bytes>, Framing)>> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    let head_len = match parsed.parse(input).context("malformed response head")? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let status =
        StatusCode::from_u16(parsed.code.unwrap_or_default()).context("response status")?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let mut framing = Framing::UntilClose;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).context("response header name")?;
        let value = HeaderValue::from_bytes(h.value).context("response header value")?;
        if name == header::CONTENT_LENGTH {
            let len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .context("response Content-Length")?;
            framing = Framing::Length(len);
        } else if name == header::TRANSFER_ENCODING
            && h.value.to_ascii_lowercase().ends_with(b"chunked")
        {
            framing = Framing::Chunked;
        }
        headers.append(name, value);
    }
    // These never carry a body, whatever their headers say.
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        framing = Framing::Length(0);
    }
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(Some((head_len, response, framing)))
}

/// Where `needle` first starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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

    use tokio::net::TcpListener;

    /// A server on a free loopback port that reads each request's head, then
    /// writes the next of `answers` as it is; after the last it closes.
    async fn serve(answers: Vec<&'static [u8]>) -> (Target, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut heads = Vec::new();
            let mut input = Vec::new();
            for answer in answers {
                let end = loop {
                    if let Some(end) = find(&input, b"\r\n\r\n") {
                        break end + 4;
                    }
                    let mut buf = [0u8; 1024];
                    let n = socket.read(&mut buf).await.expect("read");
                    assert!(n > 0, "the client closed early");
                    input.extend_from_slice(&buf[..n]);
                };
                heads.push(String::from_utf8(input.drain(..end).collect()).expect("utf-8"));
                socket.write_all(answer).await.expect("write");
            }
            heads
        });
        (Target::local_port(port), task)
    }

    #[tokio::test]
    async fn reads_sized_chunked_and_closing_answers_on_one_connection() {
        let (target, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nset-cookie: sid=s1; Path=/\r\n\r\nhello",
            b"HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\ntrailer: t\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\r\nbye",
        ])
        .await;
        let limit = Duration::from_secs(5);
        let mut conn = Conn::connect(&target, limit).await.expect("connect");
        let cookie = HeaderValue::from_static("sid=s0");

        let first = conn
            .request(Method::GET, "/a", Some(&cookie), limit)
            .await
            .expect("first");
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.body().as_ref(), b"hello");
        assert_eq!(
            session_cookie(first.headers(), Some("sid")),
            Some(HeaderValue::from_static("sid=s1"))
        );
        let second = conn
            .request(Method::GET, "/b", None, limit)
            .await
            .expect("second");
        assert_eq!(second.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(second.body().as_ref(), b"abcde");
        let third = conn
            .request(Method::POST, "/c", None, limit)
            .await
            .expect("third");
        assert_eq!(third.status(), StatusCode::NO_CONTENT);
        assert!(third.body().is_empty());
        assert!(!conn.is_closed());
        let fourth = conn
            .request(Method::GET, "/d", None, limit)
            .await
            .expect("fourth");
        assert_eq!(fourth.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(fourth.body().as_ref(), b"bye");
        assert!(conn.is_closed(), "the server said it closes");
        assert!(conn.request(Method::GET, "/e", None, limit).await.is_err());

        let heads = server.await.expect("server");
        let host = format!("host: {}", target.authority);
        assert_eq!(
            heads[0],
            format!("GET /a HTTP/1.1\r\n{host}\r\ncookie: sid=s0\r\n\r\n")
        );
        assert_eq!(heads[2], format!("POST /c HTTP/1.1\r\n{host}\r\n\r\n"));
    }

    #[tokio::test]
    async fn an_answer_cut_short_is_an_error_and_closes_the_connection() {
        let (target, server) =
            serve(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"]).await;
        let limit = Duration::from_secs(5);
        let mut conn = Conn::connect(&target, limit).await.expect("connect");
        let err = conn
            .request(Method::GET, "/", None, limit)
            .await
            .expect_err("the body is cut short");
        assert!(err.to_string().contains("within the body"), "{err}");
        assert!(conn.is_closed());
        server.await.expect("server");
    }

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
