//! The original request a forward-auth subrequest describes, read from exactly one header
//! convention (`forward_auth.original_request`). Whatever is missing, doubled or malformed is
//! `bad_original_request`: guessing would let a spelling the front proxy never forwarded be judged
//! in place of the one it does forward.

use crate::config::OriginalRequestSource;
use crate::error::Reject;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Method, Uri};

/// Longer values are refused: no front proxy sends a request target this long, and the path is
/// normalized and matched against every rule.
pub const MAX_VALUE_BYTES: usize = 8 * 1024;

/// The method and origin-form target (path and query) the decision judges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub method: Method,
    pub uri: Uri,
}

/// Reads the original request of a subrequest (`method`, `uri`, `headers`) per `source`.
/// `path_prefix` is only consulted for [`OriginalRequestSource::Subrequest`].
pub fn parse(
    source: OriginalRequestSource,
    path_prefix: Option<&str>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Original, Reject> {
    use OriginalRequestSource::*;
    match source {
        XForwarded => {
            if let Some(proto) = single(headers, "x-forwarded-proto")? {
                // Traefik says `ws`/`wss` for WebSocket requests.
                if !matches!(proto, "http" | "https" | "ws" | "wss") {
                    return Err(bad("X-Forwarded-Proto is not http, https, ws or wss"));
                }
            }
            if let Some(host) = single(headers, "x-forwarded-host")? {
                if host.parse::<Authority>().is_err() {
                    return Err(bad("X-Forwarded-Host is not a host[:port]"));
                }
            }
            Ok(Original {
                method: method_from(
                    headers,
                    "x-forwarded-method",
                    "X-Forwarded-Method is missing",
                )?,
                uri: origin_form(required(
                    headers,
                    "x-forwarded-uri",
                    "X-Forwarded-Uri is missing",
                )?)
                .ok_or_else(|| bad("X-Forwarded-Uri is not a path starting with /"))?,
            })
        }
        XOriginalUri => Ok(Original {
            method: method_from(headers, "x-original-method", "X-Original-Method is missing")?,
            uri: origin_form(required(
                headers,
                "x-original-uri",
                "X-Original-URI is missing",
            )?)
            .ok_or_else(|| bad("X-Original-URI is not a path starting with /"))?,
        }),
        XOriginalUrl => Ok(Original {
            method: method_from(headers, "x-original-method", "X-Original-Method is missing")?,
            uri: absolute_url(required(
                headers,
                "x-original-url",
                "X-Original-URL is missing",
            )?)
            .ok_or_else(|| bad("X-Original-URL is not an absolute http(s) URL"))?,
        }),
        Subrequest => {
            let target = uri.path_and_query().map_or("/", PathAndQuery::as_str);
            Ok(Original {
                method: method.clone(),
                uri: self::target(&strip_prefix(target, path_prefix))?,
            })
        }
    }
}

/// A request target (`/path?query`) a caller hands over as one value, such as Envoy's
/// `attributes.request.http.path`: checked as every other convention's target.
pub fn target(value: &str) -> Result<Uri, Reject> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(bad("the request target is over 8 KiB"));
    }
    origin_form(value).ok_or_else(|| bad("the request target is not a path starting with /"))
}

fn bad(what: &'static str) -> Reject {
    Reject::BadOriginalRequest(what)
}

/// The one value of `name`, if any; two copies are refused since front proxies differ in which
/// one they would mean.
fn single<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Option<&'h str>, Reject> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad("a header of the original request is sent twice"));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(bad("a header of the original request is over 8 KiB"));
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| bad("a header of the original request is not visible ASCII"))
}

/// No default method: a missing header means the front proxy is not configured as documented.
fn required<'h>(
    headers: &'h HeaderMap,
    name: &'static str,
    missing: &'static str,
) -> Result<&'h str, Reject> {
    single(headers, name)?.ok_or(bad(missing))
}

fn method_from(
    headers: &HeaderMap,
    name: &'static str,
    missing: &'static str,
) -> Result<Method, Reject> {
    let value = required(headers, name, missing)?;
    Method::from_bytes(value.as_bytes()).map_err(|_| bad("the original method is not a token"))
}

/// `/path?query` as a target, or `None` if it is not one: it must start with `/`, every `%` must
/// start a `%XX` escape, and a `#` (never part of a request target) is refused.
fn origin_form(value: &str) -> Option<Uri> {
    if !value.starts_with('/') || value.contains('#') || !escapes_are_valid(value) {
        return None;
    }
    let path = value.parse::<PathAndQuery>().ok()?;
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).ok()
}

/// `http://host/path?query` or `https://…`: the target part, judged like any other. `//host/x`
/// and other relative forms are refused, since the front proxy forwards the absolute one.
fn absolute_url(value: &str) -> Option<Uri> {
    let scheme_len = ["http://", "https://"]
        .iter()
        .find(|s| value.len() >= s.len() && value[..s.len()].eq_ignore_ascii_case(s))?
        .len();
    let rest = &value[scheme_len..];
    let target_at = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..target_at];
    if authority.is_empty() || authority.contains('#') || authority.parse::<Authority>().is_err() {
        return None;
    }
    let target = &rest[target_at..];
    if target.starts_with('?') || target.is_empty() {
        return origin_form(&format!("/{target}"));
    }
    origin_form(target)
}

fn escapes_are_valid(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

/// Envoy puts `path_prefix` in front of the original path; only a whole leading segment (or
/// segments) is taken off, so `/_authz` does not eat into `/_authzfoo`.
fn strip_prefix<'t>(target: &'t str, prefix: Option<&str>) -> std::borrow::Cow<'t, str> {
    let Some(prefix) = prefix else {
        return target.into();
    };
    match target.strip_prefix(prefix) {
        Some("") => "/".into(),
        Some(rest) if rest.starts_with('/') => rest.into(),
        Some(rest) if rest.starts_with('?') => format!("/{rest}").into(),
        _ => target.into(),
    }
}

#[cfg(test)]
mod tests;
