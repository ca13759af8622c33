//! The browser client as the server sends it: the minified build of `client/`, gzip or brotli
//! compressed as the browser accepts, a `304` for a reload, versioned URLs cached for a year,
//! and `HEAD` on every route.

use std::io::Read;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, VARY,
};
use sha2::{Digest, Sha256};

use crate::harness::{TestServer, client, within};

const CLASSIC: &str = include_str!("../../../client/dist/keepalive.global.min.js");
const MODULE: &str = include_str!("../../../client/dist/keepalive.min.mjs");
const DECLARATIONS: &str = include_str!("../../../client/dist/keepalive.d.ts");
const YEAR: &str = "public, max-age=31536000, immutable";

/// The versioned URL of a script: named after the first 16 hex digits of its SHA-256.
fn versioned(body: &str, extension: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("/keepalive.{hash}.{extension}")
}

async fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(server.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request")
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> &str {
    response
        .headers()
        .get(&name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_str()
        .expect("ascii")
}

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .expect("gzip");
    text
}

fn unbrotli(bytes: &[u8]) -> String {
    let mut text = String::new();
    brotli::Decompressor::new(bytes, 4096)
        .read_to_string(&mut text)
        .expect("brotli");
    text
}

/// The server compresses its files once, on a thread of its own, after it starts: until then
/// it sends them as they are.
async fn compressed(server: &TestServer) {
    within(Duration::from_secs(60), "the files compressed", || async {
        let response = get(server, "/openapi.yaml", &[("accept-encoding", "br")]).await;
        response.headers().get(CONTENT_ENCODING).is_some()
    })
    .await;
}

#[tokio::test]
async fn the_client_goes_out_minified_and_compressed_as_the_browser_accepts() {
    let server = TestServer::start(&[]).await;
    compressed(&server).await;
    for (path, built, content_type) in [
        ("/keepalive.js", CLASSIC, "text/javascript; charset=utf-8"),
        ("/keepalive.mjs", MODULE, "text/javascript; charset=utf-8"),
        (
            "/keepalive.d.ts",
            DECLARATIONS,
            "application/typescript; charset=utf-8",
        ),
    ] {
        let plain = get(&server, path, &[]).await;
        assert_eq!(plain.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&plain, CONTENT_TYPE), content_type);
        assert_eq!(header(&plain, CACHE_CONTROL), "no-cache");
        assert_eq!(header(&plain, VARY), "accept-encoding");
        assert!(plain.headers().get(CONTENT_ENCODING).is_none());
        let identity_tag = header(&plain, ETAG).to_owned();
        assert_eq!(
            plain.text().await.expect("body"),
            built,
            "{path}: the build"
        );

        let gzip = get(&server, path, &[("accept-encoding", "gzip, deflate")]).await;
        assert_eq!(header(&gzip, CONTENT_ENCODING), "gzip");
        assert_eq!(header(&gzip, VARY), "accept-encoding");
        let gzip_tag = header(&gzip, ETAG).to_owned();
        let gzipped = gzip.bytes().await.expect("body");
        assert_eq!(gunzip(&gzipped), built);

        let br = get(
            &server,
            path,
            &[("accept-encoding", "gzip, deflate, br, zstd")],
        )
        .await;
        assert_eq!(header(&br, CONTENT_ENCODING), "br");
        let br_tag = header(&br, ETAG).to_owned();
        let brotlied = br.bytes().await.expect("body");
        assert_eq!(unbrotli(&brotlied), built);

        assert!(brotlied.len() < gzipped.len() && gzipped.len() < built.len() / 2);
        if path != "/keepalive.d.ts" {
            assert!(gzipped.len() <= 4096, "{path}: {} B gzipped", gzipped.len());
        }
        // A strong validator names one representation: each encoding has its own.
        assert!(identity_tag.starts_with('"') && identity_tag.ends_with('"'));
        assert_ne!(identity_tag, gzip_tag);
        assert_ne!(gzip_tag, br_tag);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_reload_with_the_etag_costs_a_304_and_no_body() {
    let server = TestServer::start(&[]).await;
    compressed(&server).await;
    for encoding in ["identity", "gzip", "br"] {
        let first = get(&server, "/keepalive.js", &[("accept-encoding", encoding)]).await;
        let etag = header(&first, ETAG).to_owned();
        let again = get(
            &server,
            "/keepalive.js",
            &[("accept-encoding", encoding), ("if-none-match", &etag)],
        )
        .await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{encoding}");
        assert_eq!(header(&again, ETAG), etag);
        assert_eq!(header(&again, CACHE_CONTROL), "no-cache");
        assert_eq!(header(&again, VARY), "accept-encoding");
        assert!(again.bytes().await.expect("body").is_empty());
    }
    let br = get(&server, "/keepalive.mjs", &[("accept-encoding", "br")]).await;
    let etag = header(&br, ETAG).to_owned();
    for (value, status) in [
        (format!("W/{etag}"), StatusCode::NOT_MODIFIED),
        (format!("\"stale\", {etag}"), StatusCode::NOT_MODIFIED),
        ("*".to_owned(), StatusCode::NOT_MODIFIED),
        ("\"stale\"".to_owned(), StatusCode::OK),
    ] {
        let response = get(
            &server,
            "/keepalive.mjs",
            &[("accept-encoding", "br"), ("if-none-match", &value)],
        )
        .await;
        assert_eq!(response.status(), status, "{value}");
    }
    // The copy a browser holds in another encoding is another representation: sent in full.
    let gzip = get(
        &server,
        "/keepalive.mjs",
        &[("accept-encoding", "gzip"), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(gzip.status(), StatusCode::OK);
    assert_eq!(header(&gzip, CONTENT_ENCODING), "gzip");
    server.stop().await;
}

#[tokio::test]
async fn versioned_urls_are_named_by_content_and_cached_for_a_year() {
    let server = TestServer::start(&[]).await;
    compressed(&server).await;
    for (plain, built, path) in [
        ("/keepalive.js", CLASSIC, versioned(CLASSIC, "js")),
        ("/keepalive.mjs", MODULE, versioned(MODULE, "mjs")),
    ] {
        let response = get(&server, &path, &[("accept-encoding", "br")]).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&response, CACHE_CONTROL), YEAR);
        assert_eq!(header(&response, CONTENT_ENCODING), "br");
        let etag = header(&response, ETAG).to_owned();
        assert_eq!(unbrotli(&response.bytes().await.expect("body")), built);
        let same = get(&server, plain, &[("accept-encoding", "br")]).await;
        assert_eq!(header(&same, ETAG), etag, "one content, one validator");
        let again = get(
            &server,
            &path,
            &[("accept-encoding", "br"), ("if-none-match", &etag)],
        )
        .await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&again, CACHE_CONTROL), YEAR);
    }
    // Another content's name is not served.
    let stale = get(&server, "/keepalive.0123456789abcdef.js", &[]).await;
    assert_eq!(stale.status(), StatusCode::NOT_FOUND);

    // The demo page and its script load the module from its versioned URL.
    let module = versioned(MODULE, "mjs");
    for page in ["/", "/demo.js"] {
        let text = get(&server, page, &[]).await.text().await.expect("text");
        assert!(text.contains(&module), "{page} names {module}:\n{text}");
        assert!(!text.contains("'/keepalive.mjs'") && !text.contains("\"/keepalive.mjs\""));
    }
    server.stop().await;
}

#[tokio::test]
async fn head_answers_every_asset_route_with_the_length_and_no_body() {
    let server = TestServer::start(&[]).await;
    compressed(&server).await;
    let paths = [
        "/".to_owned(),
        "/keepalive.js".to_owned(),
        "/keepalive.mjs".to_owned(),
        "/keepalive.d.ts".to_owned(),
        versioned(CLASSIC, "js"),
        versioned(MODULE, "mjs"),
        "/demo.js".to_owned(),
        "/demo.css".to_owned(),
        "/openapi.yaml".to_owned(),
    ];
    for path in &paths {
        for encoding in ["identity", "br"] {
            let got = get(&server, path, &[("accept-encoding", encoding)]).await;
            let length = got.bytes().await.expect("body").len();
            let head = client()
                .head(server.url(path))
                .header(ACCEPT_ENCODING, encoding)
                .send()
                .await
                .expect("head");
            assert_eq!(head.status(), StatusCode::OK, "HEAD {path}");
            assert_eq!(header(&head, CONTENT_LENGTH), length.to_string(), "{path}");
            assert!(head.headers().get(ETAG).is_some());
            let if_none_match = header(&head, ETAG).to_owned();
            assert!(head.bytes().await.expect("body").is_empty());
            let cached = client()
                .head(server.url(path))
                .header(ACCEPT_ENCODING, encoding)
                .header(IF_NONE_MATCH, if_none_match)
                .send()
                .await
                .expect("head");
            assert_eq!(cached.status(), StatusCode::NOT_MODIFIED, "HEAD {path}");
        }
    }
    server.stop().await;
}
