//! The forward-auth original request (`forward_auth.original_request`: X-Forwarded-*,
//! X-Original-URI, X-Original-URL, or the subrequest's own target with `path_prefix`), then the
//! path judge every accepted target goes through.
//!
//! Input: one selector byte (convention, `allow_semicolons`, doubled header), then up to four
//! newline-separated fields: method, target / URL, X-Forwarded-Proto or `path_prefix`,
//! X-Forwarded-Host.

#![no_main]

use claimgate::config::OriginalRequestSource;
use claimgate::doors::original_request;
use claimgate::policy::{check_unruled, judge, normalize_path};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;

fn put(headers: &mut HeaderMap, name: &'static str, value: Option<&[u8]>, twice: bool) {
    let Some(value) = value.and_then(|v| HeaderValue::from_bytes(v).ok()) else {
        return;
    };
    let name = HeaderName::from_static(name);
    if twice {
        headers.append(name.clone(), value.clone());
    }
    headers.append(name, value);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut fields = rest.splitn(4, |b| *b == b'\n');
    let (method, target, third, fourth) =
        (fields.next(), fields.next(), fields.next(), fields.next());
    let allow_semicolons = selector & 0x04 != 0;
    let twice = selector & 0x08 != 0;
    let mut headers = HeaderMap::new();
    let mut sub_method = Method::GET;
    let mut sub_uri = Uri::from_static("/");
    let mut prefix = None;
    let source = match selector & 0x03 {
        0 => {
            put(&mut headers, "x-forwarded-method", method, false);
            put(&mut headers, "x-forwarded-uri", target, twice);
            put(&mut headers, "x-forwarded-proto", third, false);
            put(&mut headers, "x-forwarded-host", fourth, false);
            OriginalRequestSource::XForwarded
        }
        1 => {
            put(&mut headers, "x-original-method", method, twice);
            put(&mut headers, "x-original-uri", target, false);
            OriginalRequestSource::XOriginalUri
        }
        2 => {
            put(&mut headers, "x-original-method", method, false);
            put(&mut headers, "x-original-url", target, twice);
            OriginalRequestSource::XOriginalUrl
        }
        _ => {
            // What hyper would have accepted as the subrequest's own method and target.
            match method.map(Method::from_bytes) {
                Some(Ok(m)) => sub_method = m,
                Some(Err(_)) => return,
                None => {}
            }
            match target.map(Uri::try_from) {
                Some(Ok(u)) => sub_uri = u,
                Some(Err(_)) => return,
                None => {}
            }
            prefix = third.and_then(|p| std::str::from_utf8(p).ok());
            OriginalRequestSource::Subrequest
        }
    };
    let Ok(original) = original_request::parse(source, prefix, &sub_method, &sub_uri, &headers)
    else {
        return;
    };
    let path = original.uri.path();
    assert!(
        path.starts_with('/'),
        "an accepted target is origin-form: {path:?}"
    );
    let _ = check_unruled(path);
    let normalized = normalize_path(path);
    assert_eq!(
        normalize_path(&normalized),
        normalized,
        "normalizing is idempotent"
    );
    let Ok(judged) = judge(&original.uri, allow_semicolons) else {
        return;
    };
    assert!(judged.judged.starts_with('/'), "{:?}", judged.judged);
    // The upstream gets `forward` (or the original); judged again, it must read as the same path
    // the rules saw, or a second proxy hop could be steered elsewhere.
    let forwarded = judged
        .forward
        .clone()
        .unwrap_or_else(|| original.uri.clone());
    let again = judge(&forwarded, allow_semicolons).expect("a forwarded target is judged again");
    assert_eq!(again.judged, judged.judged);
    assert!(
        again.forward.is_none(),
        "forwarding is a fixed point: {forwarded}"
    );
});
