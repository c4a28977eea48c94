//! The one error type of the request path, and the one place it becomes an HTTP response.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};

mod grpc;
pub use grpc::is_grpc;

pub type Body = BoxBody<Bytes, hyper::Error>;

/// Why a request was not forwarded. Each variant has a stable reason code used in the log line,
/// the metric label and the `error_description`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    TokenMissing,
    TokenTooLarge,
    Malformed(&'static str),
    AlgNotAllowed(String),
    UnknownKid,
    /// The key exists but cannot verify this algorithm (RS/HS confusion and the like).
    KeyAlgMismatch,
    BadSignature,
    CritUnsupported(String),
    IssuerUnknown,
    TokenSourceNotAllowed,
    TokenExpired,
    TokenNotYetValid,
    AudienceMismatch,
    ClaimMissing(String),
    /// No keys were ever loaded for the provider: the token cannot be judged, so this is a 503.
    KeysUnavailable,
    /// A rule's `allow_when` did not hold; carries the rule's name.
    Forbidden(String),
    /// The token lacks scopes a rule needs; carries the scopes that would do.
    ScopeMissing(Vec<String>),
    UserBlocked,
    UserExpired,
    /// `user_data.required` and the user has no document.
    NoUserData,
    /// The user data source cannot be reached and nothing cached may be served.
    UserDataUnavailable,
    /// With rules in force, a path that upstreams could read as a different path than the rules
    /// would judge (encoded separators, `..;`, trailing dots or whitespace, unwanted `;`).
    BadPath,
    /// An `Upgrade` other than `websocket` (h2c would open a tunnel past every later decision).
    BadUpgrade,
    /// More than one token in the request (two `Authorization` headers, header and cookie...).
    TokenAmbiguous,
    /// The client's request could not be read (bad framing of its body).
    BadRequest,
    /// A claim holds a value that cannot be passed on unambiguously (a control character).
    ClaimInvalid(String),
    UpstreamUnavailable,
    UpstreamTimeout,
    /// Forward-auth: the caller's address is not in `forward_auth.trusted_proxies`.
    UntrustedProxy,
    /// Forward-auth: the headers describing the original request are missing or malformed;
    /// carries what was wrong.
    BadOriginalRequest(&'static str),
    /// Issued before the user's `tokens_valid_after` (or without `iat` while it is set), or its
    /// `jti` is in the revocation list.
    TokenRevoked,
    /// The revocation list is not known to be complete (never loaded, over `max_entries`, or
    /// not followed under `on_unavailable: deny`), so a token with a `jti` cannot be judged.
    RevocationUnavailable,
}

impl Reject {
    pub fn code(&self) -> &'static str {
        match self {
            Reject::TokenMissing => "token_missing",
            Reject::TokenTooLarge => "token_too_large",
            Reject::Malformed(_) => "malformed",
            Reject::AlgNotAllowed(_) => "alg_not_allowed",
            Reject::UnknownKid => "unknown_kid",
            Reject::KeyAlgMismatch => "key_alg_mismatch",
            Reject::BadSignature => "bad_signature",
            Reject::CritUnsupported(_) => "crit_unsupported",
            Reject::IssuerUnknown => "issuer_unknown",
            Reject::TokenSourceNotAllowed => "token_source_not_allowed",
            Reject::TokenExpired => "token_expired",
            Reject::TokenNotYetValid => "token_not_yet_valid",
            Reject::AudienceMismatch => "audience_mismatch",
            Reject::ClaimMissing(_) => "claim_missing",
            Reject::KeysUnavailable => "keys_unavailable",
            Reject::Forbidden(_) => "forbidden",
            Reject::ScopeMissing(_) => "scope_missing",
            Reject::UserBlocked => "user_blocked",
            Reject::UserExpired => "user_expired",
            Reject::NoUserData => "no_user_data",
            Reject::UserDataUnavailable => "user_data_unavailable",
            Reject::BadPath => "bad_path",
            Reject::BadUpgrade => "bad_upgrade",
            Reject::TokenAmbiguous => "token_ambiguous",
            Reject::BadRequest => "bad_request",
            Reject::ClaimInvalid(_) => "claim_invalid",
            Reject::UpstreamUnavailable => "upstream_unavailable",
            Reject::UpstreamTimeout => "upstream_timeout",
            Reject::UntrustedProxy => "untrusted_proxy",
            Reject::BadOriginalRequest(_) => "bad_original_request",
            Reject::TokenRevoked => "token_revoked",
            Reject::RevocationUnavailable => "revocation_unavailable",
        }
    }

    /// Every code, for pre-registering metric label values.
    pub const ALL_CODES: &'static [&'static str] = &[
        "token_missing",
        "token_too_large",
        "malformed",
        "alg_not_allowed",
        "unknown_kid",
        "key_alg_mismatch",
        "bad_signature",
        "crit_unsupported",
        "issuer_unknown",
        "token_source_not_allowed",
        "token_expired",
        "token_not_yet_valid",
        "audience_mismatch",
        "claim_missing",
        "keys_unavailable",
        "forbidden",
        "scope_missing",
        "user_blocked",
        "user_expired",
        "no_user_data",
        "user_data_unavailable",
        "bad_path",
        "bad_upgrade",
        "token_ambiguous",
        "bad_request",
        "claim_invalid",
        "upstream_unavailable",
        "upstream_timeout",
        "untrusted_proxy",
        "bad_original_request",
        "token_revoked",
        "revocation_unavailable",
    ];

    pub fn description(&self) -> String {
        match self {
            Reject::TokenMissing => "no bearer token in the request".into(),
            Reject::TokenTooLarge => "token exceeds the maximum allowed size".into(),
            Reject::Malformed(what) => format!("malformed token: {what}"),
            Reject::AlgNotAllowed(alg) => format!("algorithm {alg} is not allowed"),
            Reject::UnknownKid => "unknown kid: no key with this id".into(),
            Reject::KeyAlgMismatch => {
                "the key for this kid cannot verify the token's algorithm".into()
            }
            Reject::BadSignature => "bad signature".into(),
            Reject::CritUnsupported(name) => {
                format!("unsupported critical header parameter {name:?}")
            }
            Reject::IssuerUnknown => "issuer is not trusted".into(),
            Reject::TokenSourceNotAllowed => {
                "token was sent where its issuer's provider does not accept it".into()
            }
            Reject::TokenExpired => "token expired".into(),
            Reject::TokenNotYetValid => "token is not valid yet (nbf/iat in the future)".into(),
            Reject::AudienceMismatch => "audience mismatch".into(),
            Reject::ClaimMissing(field) => format!("required claim missing: {field}"),
            Reject::KeysUnavailable => "signing keys are not available yet".into(),
            Reject::Forbidden(rule) => format!("access denied by rule {rule}"),
            Reject::ScopeMissing(scopes) => format!("missing scope: {}", scopes.join(" ")),
            Reject::UserBlocked => "user is blocked".into(),
            Reject::UserExpired => "user account has expired".into(),
            Reject::NoUserData => "no user data".into(),
            Reject::UserDataUnavailable => "user data is temporarily unavailable".into(),
            Reject::BadPath => {
                "the path has a spelling that upstreams read differently (encoded or backslash \
                 separators, path parameters, trailing dot or whitespace in a segment)"
                    .into()
            }
            Reject::BadUpgrade => "only the websocket upgrade is accepted".into(),
            Reject::TokenAmbiguous => "more than one token in the request".into(),
            Reject::BadRequest => "the request could not be read".into(),
            Reject::ClaimInvalid(claim) => {
                format!("claim {claim} holds a control character")
            }
            Reject::UpstreamUnavailable => "upstream unavailable".into(),
            Reject::UpstreamTimeout => "upstream timed out".into(),
            Reject::UntrustedProxy => "the caller is not in forward_auth.trusted_proxies".into(),
            Reject::BadOriginalRequest(what) => format!("bad original request: {what}"),
            Reject::TokenRevoked => "token has been revoked".into(),
            Reject::RevocationUnavailable => {
                "the token revocation list is temporarily unavailable".into()
            }
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Reject::KeysUnavailable
            | Reject::UserDataUnavailable
            | Reject::RevocationUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Reject::Forbidden(_)
            | Reject::ScopeMissing(_)
            | Reject::UserBlocked
            | Reject::UserExpired
            | Reject::NoUserData
            | Reject::UntrustedProxy => StatusCode::FORBIDDEN,
            Reject::BadPath
            | Reject::BadUpgrade
            | Reject::TokenAmbiguous
            | Reject::BadRequest
            | Reject::BadOriginalRequest(_) => StatusCode::BAD_REQUEST,
            Reject::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Reject::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The OAuth error code (RFC 6750 §3.1) of the body and the challenge.
    fn oauth_error(&self) -> &'static str {
        match self.status() {
            StatusCode::UNAUTHORIZED => "invalid_token",
            StatusCode::FORBIDDEN => "insufficient_scope",
            StatusCode::SERVICE_UNAVAILABLE => "temporarily_unavailable",
            StatusCode::BAD_REQUEST => "invalid_request",
            _ => "bad_gateway",
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let description = self.description();
        let body = serde_json::json!({
            "error": self.oauth_error(),
            "error_description": description,
            "reason": self.code(),
        });
        let mut response = Response::new(full(body.to_string()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let challenge = match &self {
            // RFC 6750 §3.1: a request without credentials gets no error code.
            Reject::TokenMissing => Some("Bearer realm=\"claimgate\"".to_owned()),
            // Not about the caller's token: a challenge would invite a pointless retry.
            Reject::UntrustedProxy => None,
            _ if matches!(
                self.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) =>
            {
                let mut challenge = format!(
                    "Bearer error=\"{}\", error_description=\"{}\"",
                    self.oauth_error(),
                    quoted_string_safe(&description)
                );
                // RFC 6750 §3: the scopes that would grant access.
                if let Reject::ScopeMissing(scopes) = &self {
                    challenge.push_str(&format!(", scope=\"{}\"", scopes.join(" ")));
                }
                Some(challenge)
            }
            _ => None,
        };
        if let Some(challenge) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if matches!(
            self,
            Reject::KeysUnavailable | Reject::UserDataUnavailable | Reject::RevocationUnavailable
        ) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// `error_description` may only hold %x20-21 / %x23-5B / %x5D-7E (RFC 6750 §3).
fn quoted_string_safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

/// An error with all its causes: hyper's and reqwest's top-level messages (e.g. "client error
/// (Connect)") say nothing useful on their own.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A 200 JSON answer claimgate gives itself (`/userinfo`), never cached.
pub fn json_response(value: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(crate::error::full(value.to_string()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_token_challenge_names_the_reason() {
        let r = Reject::TokenExpired.into_response();
        assert_eq!(r.status(), 401);
        let challenge = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert_eq!(
            challenge,
            "Bearer error=\"invalid_token\", error_description=\"token expired\""
        );
    }

    #[test]
    fn a_revoked_token_is_an_invalid_token() {
        let r = Reject::TokenRevoked.into_response();
        assert_eq!(r.status(), 401);
        let challenge = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert_eq!(
            challenge,
            "Bearer error=\"invalid_token\", error_description=\"token has been revoked\""
        );
        assert_eq!(Reject::TokenRevoked.grpc_status(), 16);
        let r = Reject::RevocationUnavailable.into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
    }

    #[test]
    fn missing_scopes_are_named_in_the_challenge() {
        let r = Reject::ScopeMissing(vec!["read".into(), "write".into()]).into_response();
        assert_eq!(r.status(), 403);
        let challenge = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert_eq!(
            challenge,
            "Bearer error=\"insufficient_scope\", error_description=\"missing scope: read write\", \
             scope=\"read write\""
        );
    }

    #[test]
    fn codes_are_listed_once() {
        let mut codes = Reject::ALL_CODES.to_vec();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Reject::ALL_CODES.len());
    }
}
