//! Header rewriting between client and upstream: hop-by-hop removal and the `X-Forwarded-*`
//! headers.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::SocketAddr;

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// RFC 9110 §7.6.1 plus the legacy ones still seen in the wild (Keep-Alive, Proxy-Connection,
/// Trailer) and h2c's HTTP2-Settings (RFC 7540 §3.2); they describe one connection, so passing
/// them on would describe the wrong one.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "http2-settings",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Where `connection` sits in [`HOP_BY_HOP`].
const CONNECTION_AT: usize = 0;

/// Removes every header named in `Connection` and then the hop-by-hop headers themselves.
///
/// The caller should run this before injecting identity headers: otherwise a client sending
/// `Connection: x-user-id` makes [`Forwarder::forward`] delete the injected header. Running it
/// first is safe because it leaves `Connection` holding only the tokens `forward` still needs
/// (`upgrade` and the fixed hop-by-hop names) and so deletes nothing more later.
pub fn strip_connection_listed(headers: &mut HeaderMap) {
    // Most requests have no `Connection` header: nothing to collect or allocate.
    if !headers.contains_key(header::CONNECTION) {
        return;
    }
    let listed = connection_tokens(headers);
    let mut kept = Vec::new();
    for name in listed {
        if HOP_BY_HOP.contains(&name.as_str()) {
            kept.push(name.as_str().to_owned());
        } else {
            headers.remove(&name);
        }
    }
    headers.remove(header::CONNECTION);
    if kept.is_empty() {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(&kept.join(", ")) {
        headers.insert(header::CONNECTION, value);
    }
}

pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few headers a message has tells which hop-by-hop ones are present:
    // usually none on requests, and only `Connection: keep-alive` on an upstream's response.
    // Removing just those saves eight lookups that each parse and hash a name.
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| *hop == name.as_str()) {
            present[i] = true;
        }
    }
    if present[CONNECTION_AT] {
        // Names listed in `Connection` that the fixed list does not already remove.
        let listed: Vec<HeaderName> = list_tokens(headers, header::CONNECTION)
            .filter(|token| !HOP_BY_HOP.iter().any(|hop| hop.eq_ignore_ascii_case(token)))
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP
        .iter()
        .zip(present)
        .filter(|(_, present)| *present)
    {
        headers.remove(*name);
    }
}

/// The trimmed comma-separated tokens of every `name` header (`Connection`, `TE`).
fn list_tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
}

pub(super) fn connection_tokens(headers: &HeaderMap) -> Vec<HeaderName> {
    list_tokens(headers, header::CONNECTION)
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect()
}

pub(super) fn accepts_trailers(headers: &HeaderMap) -> bool {
    list_tokens(headers, header::TE).any(|token| token.eq_ignore_ascii_case("trailers"))
}

/// The protocol asked for by an HTTP/1.1 upgrade (`Connection: upgrade` + `Upgrade: x`).
pub(super) fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    // Header names compare case-insensitively; no `HeaderName` needs building for the check.
    let asked =
        list_tokens(headers, header::CONNECTION).any(|token| token.eq_ignore_ascii_case("upgrade"));
    asked
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

pub(super) fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    use std::fmt::Write;
    // One buffer for the whole value: the earlier hops, then us.
    let mut value = String::with_capacity(64);
    let previous = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty());
    for hop in previous {
        value.push_str(hop);
        value.push_str(", ");
    }
    // IPv4 clients on a dual-stack listener show up as ::ffff:a.b.c.d; upstreams expect a.b.c.d.
    // Writing to a String cannot fail.
    let _ = write!(value, "{}", peer.ip().to_canonical());
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}
