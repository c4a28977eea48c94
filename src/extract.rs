//! Finding the token in a request (the Authorization bearer header, another header, a cookie or
//! a query parameter) and, when it must not reach the upstream, taking it out again.
//!
//! A request carries at most one token: two `Authorization` headers, or tokens in two places
//! (header and cookie, cookie and query...), are refused even when equal, since upstreams that
//! read another copy than we verified (PHP and CGI take the last header) would act on it.

use crate::config::TokenSource;
use crate::error::Reject;
use http::{header, HeaderMap, HeaderValue};
use percent_encoding::percent_decode_str;
use std::borrow::Cow;

/// Returns the one token in the request and where it came from. A second `Authorization`
/// header is the caller's to refuse first ([`check_single_authorization`]), on every route.
pub fn token<'r>(
    headers: &'r HeaderMap,
    query: Option<&'r str>,
    sources: &'r [TokenSource],
) -> Result<(Cow<'r, str>, &'r TokenSource), Reject> {
    let mut found = None;
    let mut take = |token: Cow<'r, str>, source| {
        if token.is_empty() {
            return Ok(());
        }
        if found.is_some() {
            return Err(Reject::TokenAmbiguous);
        }
        found = Some((token, source));
        Ok(())
    };
    for source in sources {
        match source {
            TokenSource::Header(name) => from_header(headers, name)
                .try_for_each(|token| take(Cow::Borrowed(token?), source))?,
            TokenSource::Cookie(name) => from_cookie(headers, name)
                .try_for_each(|token| take(Cow::Borrowed(token), source))?,
            TokenSource::Query(name) => {
                from_query(query.unwrap_or(""), name).try_for_each(|token| take(token, source))?
            }
        }
    }
    found.ok_or(Reject::TokenMissing)
}

/// Whatever the route, a second `Authorization` header is never passed on: the upstream could
/// read the copy that was not verified.
pub fn check_single_authorization(headers: &HeaderMap) -> Result<(), Reject> {
    if headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(Reject::TokenAmbiguous);
    }
    Ok(())
}

/// Removes every place a token may be read from (`pass_authorization: false`): the headers,
/// the cookies (other cookies stay) and the query parameters (others stay).
pub fn remove_tokens(headers: &mut HeaderMap, uri: &mut http::Uri, sources: &[TokenSource]) {
    for source in sources {
        match source {
            TokenSource::Header(name) => {
                headers.remove(name.as_str());
            }
            TokenSource::Cookie(name) => remove_cookie(headers, name),
            TokenSource::Query(name) => remove_query_parameter(uri, name),
        }
    }
}

fn from_header<'r>(
    headers: &'r HeaderMap,
    name: &'r str,
) -> impl Iterator<Item = Result<&'r str, Reject>> + 'r {
    let authorization = name.eq_ignore_ascii_case("authorization");
    headers
        .get_all(name)
        .iter()
        .filter_map(move |value| match value.to_str() {
            Ok(text) => bearer(text.trim(), authorization).map(Ok),
            // A token sent with bytes outside visible ASCII is a broken token, not a missing one:
            // `token_missing` would answer with a challenge that says no token was sent.
            Err(_) if !authorization || is_bearer(value.as_bytes()) => {
                Some(Err(Reject::Malformed("token is not visible ASCII")))
            }
            Err(_) => None,
        })
}

fn is_bearer(value: &[u8]) -> bool {
    let value = value.trim_ascii_start();
    value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ")
}

fn bearer(value: &str, authorization: bool) -> Option<&str> {
    // RFC 6750 §2.1: the scheme is case-insensitive. A non-bearer Authorization (e.g. Basic) is
    // not a token at all.
    match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => Some(rest.trim()),
        _ if authorization => None,
        _ => Some(value),
    }
}

fn cookie_pairs(value: &HeaderValue) -> impl Iterator<Item = (&str, &str)> {
    value
        .to_str()
        .unwrap_or("")
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
}

fn from_cookie<'r>(headers: &'r HeaderMap, name: &'r str) -> impl Iterator<Item = &'r str> + 'r {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(cookie_pairs)
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Query keys are compared decoded, as the upstream's framework will read them.
fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, &str)> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode_str(k).decode_utf8_lossy(), v))
}

fn from_query<'r>(query: &'r str, name: &'r str) -> impl Iterator<Item = Cow<'r, str>> + 'r {
    query_pairs(query)
        .filter(move |(k, _)| k == name)
        .map(|(_, v)| percent_decode_str(v).decode_utf8_lossy())
}

fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    let values: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
    if !values
        .iter()
        .any(|v| cookie_pairs(v).any(|(k, _)| k == name))
    {
        return;
    }
    headers.remove(header::COOKIE);
    for value in &values {
        let kept: Vec<&str> = value
            .to_str()
            .unwrap_or("")
            .split(';')
            .map(str::trim)
            .filter(|pair| pair.split_once('=').is_none_or(|(k, _)| k != name))
            .filter(|pair| !pair.is_empty())
            .collect();
        if let (false, Ok(value)) = (kept.is_empty(), HeaderValue::from_str(&kept.join("; "))) {
            headers.append(header::COOKIE, value);
        }
    }
}

fn remove_query_parameter(uri: &mut http::Uri, name: &str) {
    let Some(query) = uri.query() else {
        return;
    };
    if !query_pairs(query).any(|(k, _)| k == name) {
        return;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            pair.split_once('=')
                .is_none_or(|(k, _)| percent_decode_str(k).decode_utf8_lossy() != name)
        })
        .collect();
    let path_and_query = match kept.is_empty() {
        true => uri.path().to_owned(),
        false => format!("{}?{}", uri.path(), kept.join("&")),
    };
    let mut parts = uri.clone().into_parts();
    // The path came from a valid URI and the kept pairs from its query, so this parses.
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(stripped) = http::Uri::from_parts(parts) {
            *uri = stripped;
        }
    }
}

#[cfg(test)]
mod tests;
