//! The browser client, its demo page and the OpenAPI document, compiled into the binary so
//! the server needs no files beside it.
//!
//! The client is the build of the `keepalive-client` package (`client/dist/`, committed, so
//! that `cargo build` needs no Node): `/keepalive.js` the minified classic script,
//! `/keepalive.mjs` the minified ES module, `/keepalive.d.ts` the declarations.
//!
//! Every file is sent gzip or brotli compressed when the browser accepts it (all compressed
//! once, on a thread of their own when the routes are built; until that is done, which is at
//! once in a release build, they go out as they are), with `Vary: Accept-Encoding` and a strong
//! `ETag` per encoding, so that a reload with `If-None-Match` costs a `304` and no body. The plain URLs
//! are `no-cache` (always revalidated, so a new version is seen at once); the scripts also have
//! versioned URLs, `/keepalive.<hash>.js` and `/keepalive.<hash>.mjs`, named after their
//! content, which browsers and CDNs may keep for a year without asking: the demo page loads
//! the client from them.

use std::borrow::Cow;
use std::io::Write;
use std::sync::{LazyLock, Once, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::AppState;

/// The demo page may load only its own script and style: no inline code, no third party.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/// Plain URLs: cached, but revalidated on each use (a `304` while unchanged).
const REVALIDATE: &str = "no-cache";
/// Versioned URLs change with the content, so what is behind one never changes.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// How a body travels: as built, or compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Brotli,
}

impl Encoding {
    /// The `Content-Encoding` value, and the suffix of the entity tag: each encoding is a
    /// representation of its own, and a strong validator must tell them apart.
    fn token(self) -> Option<&'static str> {
        match self {
            Self::Identity => None,
            Self::Gzip => Some("gzip"),
            Self::Brotli => Some("br"),
        }
    }
}

/// One file: its bytes, their hash, and the compressed bodies once made.
struct Asset {
    body: Cow<'static, str>,
    content_type: &'static str,
    /// The first 16 hex digits of the SHA-256 of `body`: the versioned URL and the entity tag.
    hash: String,
    compressed: OnceLock<(Vec<u8>, Vec<u8>)>,
}

impl Asset {
    fn new(body: impl Into<Cow<'static, str>>, content_type: &'static str) -> Self {
        let body = body.into();
        let digest = Sha256::digest(body.as_bytes());
        let hash = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            body,
            content_type,
            hash,
            compressed: OnceLock::new(),
        }
    }

    /// Makes the gzip and brotli bodies, at their best compression: done once per file, and
    /// the files are small, so the cost of the best settings is paid once for every download.
    fn compress(&self) {
        self.compressed.get_or_init(|| {
            let bytes = self.body.as_bytes();
            let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gzip.write_all(bytes).expect("gzip into memory");
            let gzip = gzip.finish().expect("gzip into memory");
            let mut brotli = Vec::new();
            {
                let mut writer = brotli::CompressorWriter::new(
                    &mut brotli,
                    4096,
                    11,
                    brotli_window(bytes.len()),
                );
                writer.write_all(bytes).expect("brotli into memory");
            }
            (gzip, brotli)
        });
    }

    fn etag(&self, encoding: Encoding) -> HeaderValue {
        let tag = match encoding.token() {
            None => format!("\"{}\"", self.hash),
            Some(token) => format!("\"{}-{token}\"", self.hash),
        };
        HeaderValue::from_str(&tag).expect("hex and ASCII")
    }

    /// The answer to a GET (or HEAD) of this file: `304` when the browser's copy is current,
    /// else the body in the best encoding the browser accepts.
    fn respond(&'static self, request: &HeaderMap, cache: &'static str) -> Response {
        // Never waits for the compression: a request is no place for that work.
        let compressed = self.compressed.get();
        let encoding = compressed.map_or(Encoding::Identity, |_| preferred(request));
        let etag = self.etag(encoding);
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        headers.insert(header::ETAG, etag.clone());
        if matches(request, &etag) {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        let body: &'static [u8] = match (encoding, compressed) {
            (Encoding::Gzip, Some((gzip, _))) => gzip,
            (Encoding::Brotli, Some((_, brotli))) => brotli,
            _ => self.body.as_bytes(),
        };
        if let Some(token) = encoding.token() {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(token));
        }
        (headers, Body::from(body)).into_response()
    }
}

/// Brotli when the browser accepts it at least as much as gzip, then gzip, else the body as
/// it is (RFC 9110 §12.5.3: a coding with `q=0`, or not named where `*` is absent, is refused).
fn preferred(request: &HeaderMap) -> Encoding {
    let mut named: Vec<(String, f32)> = Vec::new();
    for value in request.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if coding.is_empty() {
                continue;
            }
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            named.push((coding, q));
        }
    }
    let weight = |codings: &[&str]| {
        named
            .iter()
            .find(|(c, _)| codings.contains(&c.as_str()))
            .or_else(|| named.iter().find(|(c, _)| c == "*"))
            .map_or(0.0, |(_, q)| *q)
    };
    let (br, gzip) = (weight(&["br"]), weight(&["gzip", "x-gzip"]));
    if br > 0.0 && br >= gzip {
        Encoding::Brotli
    } else if gzip > 0.0 {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

/// Whether `If-None-Match` names this representation (weak comparison, as RFC 9110 §13.1.2
/// asks of it), or is `*`.
fn matches(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.as_bytes();
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).as_bytes() == ours)
}

/// Every embedded file, hashed at first use (the router's construction).
struct Assets {
    client: Asset,
    module: Asset,
    declarations: Asset,
    index: Asset,
    demo_script: Asset,
    demo_style: Asset,
    openapi: Asset,
}

impl Assets {
    fn all(&self) -> [&Asset; 7] {
        [
            &self.client,
            &self.module,
            &self.declarations,
            &self.index,
            &self.demo_script,
            &self.demo_style,
            &self.openapi,
        ]
    }

    /// Compresses every file once, away from the request handlers (brotli at its best setting
    /// takes a while on the OpenAPI document in a debug build).
    fn warm_up() {
        static STARTED: Once = Once::new();
        STARTED.call_once(|| {
            let work = || ASSETS.all().into_iter().for_each(Asset::compress);
            if std::thread::Builder::new()
                .name("keepalive-assets".to_owned())
                .spawn(work)
                .is_err()
            {
                work();
            }
        });
    }

    fn client_path(&self) -> String {
        format!("/keepalive.{}.js", self.client.hash)
    }

    fn module_path(&self) -> String {
        format!("/keepalive.{}.mjs", self.module.hash)
    }
}

/// The plain URL of the client module, as the demo's sources write it; the server puts the
/// versioned one in its place.
const MODULE_URL: &str = "/keepalive.mjs";

static ASSETS: LazyLock<Assets> = LazyLock::new(|| {
    let client = Asset::new(
        include_str!("../../client/dist/keepalive.global.min.js"),
        JAVASCRIPT,
    );
    let module = Asset::new(
        include_str!("../../client/dist/keepalive.min.mjs"),
        JAVASCRIPT,
    );
    let versioned = format!("/keepalive.{}.mjs", module.hash);
    Assets {
        client,
        module,
        declarations: Asset::new(
            include_str!("../../client/dist/keepalive.d.ts"),
            "application/typescript; charset=utf-8",
        ),
        index: Asset::new(
            include_str!("../../web/index.html").replace(MODULE_URL, &versioned),
            "text/html; charset=utf-8",
        ),
        demo_script: Asset::new(
            include_str!("../../web/demo.js").replace(MODULE_URL, &versioned),
            JAVASCRIPT,
        ),
        demo_style: Asset::new(
            include_str!("../../web/demo.css"),
            "text/css; charset=utf-8",
        ),
        openapi: Asset::new(
            include_str!("../../docs/openapi.yaml"),
            "application/yaml; charset=utf-8",
        ),
    }
});

async fn index(request: HeaderMap) -> Response {
    let mut response = ASSETS.index.respond(&request, REVALIDATE);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A route that serves `pick(&ASSETS)` with the given caching.
fn serve(
    pick: fn(&'static Assets) -> &'static Asset,
    cache: &'static str,
) -> axum::routing::MethodRouter<AppState> {
    get(move |request: HeaderMap| async move { pick(&ASSETS).respond(&request, cache) })
}

/// The browser client (plain and versioned URLs) and the OpenAPI document: what an
/// application embedding keepalive serves too.
pub fn client_routes() -> Router<AppState> {
    Assets::warm_up();
    Router::new()
        .route("/keepalive.js", serve(|a| &a.client, REVALIDATE))
        .route("/keepalive.mjs", serve(|a| &a.module, REVALIDATE))
        .route(&ASSETS.client_path(), serve(|a| &a.client, IMMUTABLE))
        .route(&ASSETS.module_path(), serve(|a| &a.module, IMMUTABLE))
        .route("/keepalive.d.ts", serve(|a| &a.declarations, REVALIDATE))
        .route("/openapi.yaml", serve(|a| &a.openapi, REVALIDATE))
}

/// The demo page at `/`, its script and style: the standalone server's only. An application
/// that embeds keepalive has its own `/`.
pub fn demo_routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/demo.js", serve(|a| &a.demo_script, REVALIDATE))
        .route("/demo.css", serve(|a| &a.demo_style, REVALIDATE))
}

/// The smallest brotli window (its log2, 10 to 24) that holds all of `len` bytes: a larger one
/// compresses such a file no better, and the encoder's memory at the best quality grows with
/// the window: what it takes at start-up stays in the process's resident memory, since the
/// allocator keeps the pages it was given back.
fn brotli_window(len: usize) -> u32 {
    // The window holds 2^lgwin - 16 bytes.
    len.saturating_add(16)
        .checked_next_power_of_two()
        .map_or(24, |needed| needed.trailing_zeros().clamp(10, 24))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).expect("ascii"),
        );
        headers
    }

    #[test]
    fn the_brotli_window_holds_the_whole_file_and_no_more() {
        for (len, lgwin) in [
            (0, 10),
            (1_008, 10),
            (1_009, 11),
            (16_700, 15),
            (70_000, 17),
            (1 << 30, 24),
            (usize::MAX, 24),
        ] {
            assert_eq!(brotli_window(len), lgwin, "{len} bytes");
        }
    }

    #[test]
    fn the_best_accepted_encoding_wins() {
        for (value, expected) in [
            ("gzip, deflate, br, zstd", Encoding::Brotli),
            ("gzip, deflate", Encoding::Gzip),
            ("br;q=0.5, gzip", Encoding::Gzip),
            ("br;q=0, gzip;q=0", Encoding::Identity),
            ("*", Encoding::Brotli),
            ("*;q=0.1, br;q=0", Encoding::Gzip),
            ("identity", Encoding::Identity),
            ("x-gzip", Encoding::Gzip),
            ("GZIP; Q=0.8", Encoding::Gzip),
            ("", Encoding::Identity),
        ] {
            assert_eq!(preferred(&accept(value)), expected, "{value}");
        }
        assert_eq!(preferred(&HeaderMap::new()), Encoding::Identity);
    }

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists_and_star() {
        let etag = HeaderValue::from_static("\"abc-br\"");
        for (value, expected) in [
            ("\"abc-br\"", true),
            ("W/\"abc-br\"", true),
            ("\"x\", \"abc-br\"", true),
            ("*", true),
            ("\"abc\"", false),
            ("\"abc-gzip\"", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static(value));
            assert_eq!(matches(&headers, &etag), expected, "{value}");
        }
    }

    #[test]
    fn the_demo_loads_the_versioned_module() {
        let versioned = ASSETS.module_path();
        for asset in [&ASSETS.index, &ASSETS.demo_script] {
            assert!(asset.body.contains(&versioned), "{}", asset.body);
            assert!(!asset.body.contains(&format!("\"{MODULE_URL}\"")));
            assert!(!asset.body.contains(&format!("'{MODULE_URL}'")));
        }
    }
}
