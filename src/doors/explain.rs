//! The explain door (`POST /explain` on the admin port, `claimgate explain`): runs the one
//! decision on a described request with a [`Trace`] and answers what each step saw, forwarding
//! nothing. It checks nothing itself; the status is the one [`Reject::status`] gives.

use crate::config::TokenSource;
use crate::decision::{hex, Admission, Decider, Decision};
use crate::error::Reject;
use crate::explain::Trace;
use crate::token_cache::digest;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The request to explain: the token, and the route it would be sent to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    pub token: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The peer the decision sees: the explained request has none, and rules reading
/// `%%request.remote_ip` judge it as a local caller.
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Parses a `POST /explain` body; the error is the reason for the 400.
pub fn parse_request(body: &[u8]) -> Result<ExplainRequest, String> {
    let request: ExplainRequest =
        serde_json::from_slice(body).map_err(|e| format!("request body: {e}"))?;
    if request.token.is_empty() {
        return Err("request body: `token` must not be empty".into());
    }
    Ok(request)
}

/// Runs the decision on `request` and answers as JSON. `Err` is a request that cannot be
/// described to the decision (bad method, path or header), for a 400.
pub async fn explain(decider: &Decider, request: &ExplainRequest) -> Result<Value, String> {
    let method_text = request.method.as_deref().unwrap_or("GET");
    let method = Method::from_bytes(method_text.as_bytes())
        .map_err(|_| format!("`method`: {method_text:?} is not an HTTP method"))?;
    let path = request.path.as_deref().unwrap_or("/");
    if !path.starts_with('/') {
        return Err(format!("`path`: {path:?} must start with `/`"));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &request.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`headers`: {name:?} is not a header name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("`headers.{name}`: not a valid header value"))?;
        headers.append(name, value);
    }
    let uri = present_token(decider, &request.token, path, &mut headers)?;
    let mut trace = Trace::default();
    let admission = Admission {
        method: &method,
        uri: &uri,
        headers: &headers,
        peer: PEER,
        client_cert: None,
    };
    let outcome = decider.decide_traced(admission, &mut trace).await;
    Ok(answer(&request.token, &trace, outcome.decision))
}

/// Puts the token where the first configured token source reads it, as a client would send it.
fn present_token(
    decider: &Decider,
    token: &str,
    path: &str,
    headers: &mut HeaderMap,
) -> Result<Uri, String> {
    let bad_token = |_| "`token`: not valid in a header (visible ASCII only)".to_owned();
    let mut path = path.to_owned();
    match decider.sources.first() {
        Some(TokenSource::Header(name)) => {
            let value = if name.eq_ignore_ascii_case("authorization") {
                format!("Bearer {token}")
            } else {
                token.to_owned()
            };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            headers.insert(name, HeaderValue::from_str(&value).map_err(bad_token)?);
        }
        Some(TokenSource::Cookie(name)) => {
            let value = HeaderValue::from_str(&format!("{name}={token}")).map_err(bad_token)?;
            headers.append(header::COOKIE, value);
        }
        Some(TokenSource::Query(name)) => {
            let sep = if path.contains('?') { '&' } else { '?' };
            let encoded =
                percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC);
            path = format!("{path}{sep}{name}={encoded}");
        }
        None => {}
    }
    path.parse::<Uri>()
        .map_err(|e| format!("`path`: {path:?} is not a request target: {e}"))
}

/// The answer: the trace's steps and the decision, the token only as a prefix and a digest.
pub fn answer(token: &str, trace: &Trace, decision: Result<Decision, Reject>) -> Value {
    let (verdict, status, reason, headers) = match &decision {
        Ok(Decision::Allow(allow)) => {
            let headers: Map<String, Value> = allow
                .identity
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), Value::String(value))
                })
                .collect();
            ("allow", StatusCode::OK, None, headers)
        }
        Ok(Decision::Respond(response)) => ("allow", response.status(), None, Map::new()),
        Err(reject) => ("deny", reject.status(), Some(reject.code()), Map::new()),
    };
    let user_data = trace.user_data.as_ref().map(|u| {
        json!({"document": u.document, "from_cache": u.from_cache, "age_seconds": u.age_seconds})
    });
    let rule = trace.rule.as_ref().map(|r| {
        let allow_when: Vec<Value> = r
            .allow_when
            .iter()
            .map(|(expression, value)| json!({"expression": expression, "value": value}))
            .collect();
        json!({"name": r.name, "allow_when": allow_when})
    });
    let mut out = json!({
        "decision": verdict,
        "status": status.as_u16(),
        "token": {
            "prefix": token.chars().take(8).collect::<String>(),
            "sha256": hex(&digest(token)),
        },
        "source": trace.source,
        "provider": trace.provider,
        "checks": trace.checks_json(),
        "metadata": trace.metadata,
        "user_data": user_data,
        "rule": rule,
        "headers": headers,
    });
    if let Some(reason) = reason {
        out["reason"] = reason.into();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_that_do_not_parse_name_the_reason() {
        let err = parse_request(b"{\"method\": \"GET\"}").unwrap_err();
        assert!(err.contains("missing field `token`"), "{err}");
        let err = parse_request(b"{\"token\": \"x\", \"nope\": 1}").unwrap_err();
        assert!(err.contains("unknown field `nope`"), "{err}");
        let err = parse_request(b"not json").unwrap_err();
        assert!(err.starts_with("request body: "), "{err}");
        assert!(parse_request(b"{\"token\": \"\"}").is_err());
        let ok = parse_request(br#"{"token": "a.b.c", "headers": {"x-a": "1"}}"#).unwrap();
        assert_eq!(ok.headers["x-a"], "1");
    }

    #[test]
    fn the_answer_never_holds_the_whole_token() {
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl";
        let mut trace = Trace::default();
        trace.fail("structure", &Reject::Malformed("x"), Value::Null);
        let out = answer(token, &trace, Err(Reject::BadSignature));
        let text = out.to_string();
        assert!(!text.contains(token));
        assert_eq!(out["token"]["prefix"], "eyJhbGci");
        assert_eq!(out["token"]["sha256"].as_str().map(str::len), Some(64));
        assert_eq!(out["decision"], "deny");
        assert_eq!(out["status"], 401);
        assert_eq!(out["reason"], "bad_signature");
        assert_eq!(out["user_data"], Value::Null);
        assert_eq!(out["rule"], Value::Null);
        let forbidden = answer(token, &trace, Err(Reject::Forbidden("r".into())));
        assert_eq!(forbidden["status"], 403);
    }
}
