//! Bearer tokens (RFC 6750) on requests: the `/health` details, `/metrics` and the backend API
//! each take one from configuration.

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The bearer token of a request (the scheme name is case-insensitive, RFC 9110).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether the request carries `token`, compared in constant time.
pub fn carries(headers: &HeaderMap, token: &Secret) -> bool {
    bearer(headers)
        .is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())))
}
