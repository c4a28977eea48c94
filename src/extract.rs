//! Finding the token in a request: the Authorization bearer header, another header, a cookie
//! or a query parameter, in the configured order.

use crate::config::TokenSource;
use crate::error::Reject;
use http::HeaderMap;
use std::borrow::Cow;

/// Returns the first token found and where it came from.
pub fn token<'r>(
    headers: &'r HeaderMap,
    query: Option<&'r str>,
    sources: &'r [TokenSource],
) -> Result<(Cow<'r, str>, &'r TokenSource), Reject> {
    for source in sources {
        let found = match source {
            TokenSource::Header(name) => from_header(headers, name).map(Cow::Borrowed),
            TokenSource::Cookie(name) => from_cookie(headers, name).map(Cow::Borrowed),
            TokenSource::Query(name) => query.and_then(|q| from_query(q, name)),
        };
        if let Some(token) = found.filter(|t| !t.is_empty()) {
            return Ok((token, source));
        }
    }
    Err(Reject::TokenMissing)
}

fn from_header<'r>(headers: &'r HeaderMap, name: &str) -> Option<&'r str> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    // RFC 6750 §2.1: the scheme is case-insensitive. A non-bearer Authorization (e.g. Basic) is
    // not a token at all.
    match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => Some(rest.trim()),
        _ if name.eq_ignore_ascii_case("authorization") => None,
        _ => Some(value),
    }
}

fn from_cookie<'r>(headers: &'r HeaderMap, name: &str) -> Option<&'r str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

fn from_query<'r>(query: &'r str, name: &str) -> Option<Cow<'r, str>> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_encoding::percent_decode_str(v).decode_utf8_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn sources_are_tried_in_order() {
        let sources = vec![
            TokenSource::Header("Authorization".into()),
            TokenSource::Cookie("access_token".into()),
            TokenSource::Query("access_token".into()),
        ];
        let h = headers(&[("cookie", "a=1; access_token=ck; b=2")]);
        assert_eq!(token(&h, Some("access_token=q"), &sources).unwrap().0, "ck");
        let h = headers(&[
            ("authorization", "bearer hd"),
            ("cookie", "access_token=ck"),
        ]);
        assert_eq!(token(&h, None, &sources).unwrap().0, "hd");
        let h = headers(&[("authorization", "Basic dXNlcg==")]);
        assert_eq!(
            token(&h, Some("x=1&access_token=a%2Eb"), &sources)
                .unwrap()
                .0,
            "a.b"
        );
        assert_eq!(token(&h, None, &sources).unwrap_err(), Reject::TokenMissing);
    }
}
