//! Which protocol upgrades may pass. Once the upstream answers 101 the connection is a raw
//! tunnel that carries no further HTTP decisions, so only WebSocket (which stays one
//! application's conversation) is let through, under the route's own `auth`. `h2c` would turn
//! the tunnel into a second HTTP server behind the proxy: h2 requests for any path, with any
//! identity header, and no token.

use crate::error::Reject;
use http::{header, HeaderMap, HeaderValue};

/// `Err(BadUpgrade)` for any `Upgrade` header other than a single `websocket`, whether or not
/// `Connection` lists `upgrade` (an upstream may not care).
pub fn check(headers: &HeaderMap) -> Result<(), Reject> {
    let mut values = headers.get_all(header::UPGRADE).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(()),
        (Some(value), None) if is_websocket(value) => Ok(()),
        _ => Err(Reject::BadUpgrade),
    }
}

fn is_websocket(value: &HeaderValue) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::UPGRADE, HeaderValue::from_static(v));
        }
        headers
    }

    #[test]
    fn only_a_lone_websocket_passes() {
        assert_eq!(check(&with(&[])), Ok(()));
        assert_eq!(check(&with(&["websocket"])), Ok(()));
        assert_eq!(check(&with(&["WebSocket"])), Ok(()));
        for bad in [
            &["h2c"][..],
            &["websocket, h2c"],
            &["websocket", "h2c"],
            &["TLS/1.0"],
            &[""],
        ] {
            assert_eq!(check(&with(bad)), Err(Reject::BadUpgrade), "{bad:?}");
        }
    }
}
