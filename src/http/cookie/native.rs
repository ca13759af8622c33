//! keepalive's own session cookie: reading the id from a request, setting and clearing it.

use axum::http::header::HeaderMap;
use cookie::{Cookie, SameSite};

use crate::config::SessionSettings;
use crate::session::SessionId;

/// The first well-formed session id carried by the request, if any; malformed values are
/// skipped without any store lookup. A value planted before the session's own (by a sibling
/// subdomain) wins here: the routes try each of [`session_ids`] instead.
pub fn session_id(headers: &HeaderMap, name: &str) -> Option<SessionId> {
    session_ids(headers, name).next()
}

/// Every well-formed session id the request carries under `name`, in order.
pub fn session_ids<'a>(
    headers: &'a HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = SessionId> + 'a {
    super::values(headers, name).filter_map(SessionId::parse)
}

/// The `Set-Cookie` value that gives the browser this session.
pub fn set(settings: &SessionSettings, id: &SessionId) -> String {
    Cookie::build((settings.cookie_name.as_str(), id.to_string()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(settings.cookie_secure)
        .build()
        .to_string()
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear(settings: &SessionSettings) -> String {
    Cookie::build((settings.cookie_name.as_str(), ""))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(settings.cookie_secure)
        .max_age(cookie::time::Duration::ZERO)
        .expires(cookie::time::OffsetDateTime::UNIX_EPOCH)
        .build()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use axum::http::header::COOKIE;
    use std::time::Duration;

    fn settings() -> SessionSettings {
        SessionSettings {
            idle_timeout: Duration::from_secs(600),
            absolute_lifetime: Duration::from_secs(3600),
            cookie_name: "sid".to_owned(),
            cookie_secure: true,
        }
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(COOKIE, HeaderValue::from_str(v).expect("header"));
        }
        map
    }

    #[test]
    fn finds_the_id_among_other_cookies() {
        let id = SessionId::generate().expect("rng");
        let h = headers(&[&format!("theme=dark; sid={id}; lang=fr")]);
        assert_eq!(session_id(&h, "sid"), Some(id));
        let h = headers(&["theme=dark", &format!("sid={id}")]);
        assert_eq!(session_id(&h, "sid"), Some(id));
    }

    #[test]
    fn skips_malformed_and_foreign_values() {
        let id = SessionId::generate().expect("rng");
        assert_eq!(session_id(&headers(&["sid=garbage"]), "sid"), None);
        assert_eq!(session_id(&headers(&[&format!("other={id}")]), "sid"), None);
        assert_eq!(
            session_id(&headers(&[&format!("sid=bad; sid={id}")]), "sid"),
            Some(id)
        );
        assert_eq!(session_id(&HeaderMap::new(), "sid"), None);
    }

    #[test]
    fn cookie_attributes() {
        let id = SessionId::generate().expect("rng");
        let set = set(&settings(), &id);
        assert!(set.starts_with(&format!("sid={id}")));
        for attr in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
            assert!(set.contains(attr), "{set}");
        }
        let clear = clear(&settings());
        assert!(clear.contains("Max-Age=0"), "{clear}");
    }
}

#[cfg(test)]
mod properties {
    use axum::http::HeaderValue;
    use axum::http::header::COOKIE;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_cookie_header_is_read_without_panicking(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..4)) {
            let mut headers = HeaderMap::new();
            for value in values {
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    headers.append(COOKIE, value);
                }
            }
            if let Some(id) = session_id(&headers, "sid") {
                prop_assert_eq!(SessionId::parse(&id.to_string()), Some(id));
            }
        }

        #[test]
        fn the_id_is_found_among_noise(noise in "[a-z]{1,8}=[ -:<-~]{0,20}", id in any::<[u8; 16]>()) {
            let id = SessionId::from_bytes(id);
            let mut headers = HeaderMap::new();
            headers.insert(COOKIE, HeaderValue::from_str(&format!("{noise}; sid={id}; {noise}")).expect("header"));
            prop_assert_eq!(session_id(&headers, "sid"), Some(id));
        }
    }
}
