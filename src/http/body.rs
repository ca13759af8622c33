//! JSON request bodies of the session routes: at most 4 KiB, `application/json`, one object
//! whose fields the route names.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value};

use super::{ApiError, MAX_SESSION_BODY};

/// The body as read, or the error that says why it could not be (413 when too large).
pub fn bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body may be at most {MAX_SESSION_BODY} bytes"),
        ),
        _ => ApiError::bad_request(format!("cannot read the request body: {rejection}")),
    })
}

/// The fields of a JSON object body; `None` for an empty body. `shape` shows the expected
/// form in error messages; a field not in `allowed` is refused, so a typo is not ignored.
pub fn object(
    headers: &HeaderMap,
    body: &[u8],
    allowed: &[&str],
    shape: &str,
) -> Result<Option<Map<String, Value>>, ApiError> {
    if body.is_empty() {
        return Ok(None);
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be sent as application/json",
        ));
    }
    // Read as a generic value first: serde would also accept an array for a struct.
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("invalid JSON body: {err}; {shape}")))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object; {shape}"
        )));
    };
    if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown field `{unknown}` in the body; {shape}"
        )));
    }
    Ok(Some(fields))
}

/// The `data` field as JSON text: an object, or empty when absent.
pub fn data(fields: &mut Map<String, Value>, shape: &str) -> Result<String, ApiError> {
    match fields.remove("data") {
        None => Ok(String::new()),
        Some(Value::Object(data)) => Ok(Value::Object(data).to_string()),
        Some(_) => Err(ApiError::bad_request(format!(
            "`data` must be a JSON object; {shape}"
        ))),
    }
}

/// A session's data as a JSON value: the stored object, or `{}`.
pub fn data_value(data: &str) -> Value {
    if data.is_empty() {
        return Value::Object(Map::new());
    }
    serde_json::from_str(data).unwrap_or_else(|_| Value::Object(Map::new()))
}
