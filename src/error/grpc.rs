//! The answer for gRPC callers: the same `Reject`, as a gRPC status instead of a JSON body.

use super::{full, Body, Reject};
use http::{header, HeaderValue, Response, StatusCode};

/// gRPC callers (`content-type: application/grpc*`) read `grpc-status`, never a JSON body.
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

impl Reject {
    /// The gRPC status code (grpc/doc/statuscodes.md) matching the HTTP answer.
    pub fn grpc_status(&self) -> u8 {
        match self.status() {
            StatusCode::UNAUTHORIZED => 16, // UNAUTHENTICATED
            StatusCode::FORBIDDEN => 7,     // PERMISSION_DENIED
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY => 14, // UNAVAILABLE
            StatusCode::GATEWAY_TIMEOUT => 4, // DEADLINE_EXCEEDED
            StatusCode::BAD_REQUEST => 3,   // INVALID_ARGUMENT
            _ => 13,                        // INTERNAL
        }
    }

    /// The answer for a gRPC caller: a trailers-only response (HTTP 200, no body) whose
    /// `grpc-status` says why and whose `grpc-message` is `<reason>: <description>`; the
    /// `WWW-Authenticate` and `Retry-After` of [`Reject::into_response`] are kept.
    pub fn into_grpc_response(self) -> Response<Body> {
        let status = self.grpc_status();
        let message = format!("{}: {}", self.code(), self.description());
        let (mut parts, _) = self.into_response().into_parts();
        parts.status = StatusCode::OK;
        parts.headers.remove(header::CACHE_CONTROL);
        let headers = &mut parts.headers;
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(u16::from(status)));
        if let Ok(value) = HeaderValue::from_str(&grpc_percent_encoded(&message)) {
            headers.insert("grpc-message", value);
        }
        Response::from_parts(parts, full(""))
    }
}

/// gRPC's `Percent-Encoded` (PROTOCOL-HTTP2.md): bytes outside `%x20-%x7E`, and `%`, escaped.
fn grpc_percent_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_callers_get_a_status_not_a_body() {
        let r = Reject::TokenMissing.into_grpc_response();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "16");
        assert_eq!(
            r.headers()["grpc-message"],
            "token_missing: no bearer token in the request"
        );
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(Reject::Forbidden("x".into()).grpc_status(), 7);
        assert_eq!(Reject::KeysUnavailable.grpc_status(), 14);
        assert_eq!(grpc_percent_encoded("50% é"), "50%25 %C3%A9");
    }
}
