//! One identity value as header bytes: plain when an upstream reads back exactly those bytes,
//! otherwise the RFC 8187 extended form, so that no value can inject or lose characters.

use crate::config::HeaderEncoding;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use serde_json::Value;

pub(super) fn encoded(bytes: &[u8]) -> HeaderValue {
    // base64url output is always a valid header value.
    HeaderValue::from_str(&URL_SAFE_NO_PAD.encode(bytes)).unwrap_or(HeaderValue::from_static(""))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Scalars as text, arrays comma-joined, objects as compact JSON — unless an encoding is chosen.
/// A rendering that cannot travel as a plain header value is sent as [`extended`] instead.
pub fn header_value(value: &Value, encoding: Option<HeaderEncoding>) -> HeaderValue {
    let rendered = match (encoding, value) {
        (Some(HeaderEncoding::Json), v) => v.to_string(),
        (Some(HeaderEncoding::Base64url), v) => return encoded(text(v).as_bytes()),
        (_, Value::Array(items)) => items.iter().map(text).collect::<Vec<_>>().join(","),
        (_, v) => text(v),
    };
    if is_plain(&rendered) {
        if let Ok(value) = HeaderValue::from_str(&rendered) {
            return value;
        }
    }
    extended(&rendered)
}

/// The RFC 8187 prefix that marks an encoded value.
const EXTENDED_PREFIX: &str = "UTF-8''";

/// A value is sent as-is only if an upstream reads back exactly these bytes: printable ASCII
/// (no control character, no TAB), no leading or trailing space (HTTP parsers strip it, so
/// `" bob"` would arrive as `bob`), and not starting with the prefix of an encoded value (in any
/// case, as charset names are case-insensitive), so that no plain value reads as an encoded one.
fn is_plain(rendered: &str) -> bool {
    let bytes = rendered.as_bytes();
    let starts_like_extended = bytes.len() >= EXTENDED_PREFIX.len()
        && bytes[..EXTENDED_PREFIX.len()].eq_ignore_ascii_case(EXTENDED_PREFIX.as_bytes());
    bytes.iter().all(|b| (0x20..0x7f).contains(b))
        && !rendered.starts_with(' ')
        && !rendered.ends_with(' ')
        && !starts_like_extended
}

/// RFC 8187 `attr-char`: everything else is percent-encoded, `%` included.
const NOT_ATTR_CHAR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `UTF-8''` and the UTF-8 bytes percent-encoded, as an RFC 8187 `ext-value` (what a
/// `filename*=` parameter carries). Injective together with the plain values: every encoded value
/// starts with the prefix and no plain one does, and percent-encoding is reversible.
fn extended(rendered: &str) -> HeaderValue {
    let text = format!(
        "{EXTENDED_PREFIX}{}",
        percent_encoding::utf8_percent_encode(rendered, NOT_ATTR_CHAR)
    );
    // Only prefix, attr-chars and `%XX`: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(EXTENDED_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(v: Value, e: Option<HeaderEncoding>) -> String {
        header_value(&v, e).to_str().unwrap().to_owned()
    }

    #[test]
    fn values_render_by_shape() {
        assert_eq!(render(json!("ann"), None), "ann");
        assert_eq!(render(json!(42), None), "42");
        assert_eq!(render(json!(["a", "b", 3]), None), "a,b,3");
        assert_eq!(render(json!({"a": 1}), None), "{\"a\":1}");
        assert_eq!(
            render(json!(["a", "b"]), Some(HeaderEncoding::Json)),
            "[\"a\",\"b\"]"
        );
        assert_eq!(render(json!("hi"), Some(HeaderEncoding::Base64url)), "aGk");
    }

    #[test]
    fn unsafe_values_get_the_extended_form() {
        assert_eq!(
            render(json!("a\r\nX-Evil: 1"), None),
            "UTF-8''a%0D%0AX-Evil%3A%201"
        );
        assert_eq!(render(json!("José"), None), "UTF-8''Jos%C3%A9");
        assert_eq!(render(json!("\u{1}bob"), None), "UTF-8''%01bob");
        assert_eq!(render(json!("a\tb"), None), "UTF-8''a%09b");
        assert_eq!(render(json!(" bob"), None), "UTF-8''%20bob");
        assert_eq!(render(json!("bob "), None), "UTF-8''bob%20");
        // Plain values that look encoded are encoded themselves.
        assert_eq!(render(json!("UTF-8''x"), None), "UTF-8''UTF-8%27%27x");
        assert_eq!(render(json!("utf-8''x"), None), "UTF-8''utf-8%27%27x");
        // What the old base64url fallback produced for them is now just a plain value.
        assert_eq!(render(json!("AWJvYg"), None), "AWJvYg");
        assert_eq!(render(json!("Sm9zw6k"), None), "Sm9zw6k");
        assert_eq!(render(json!("a b"), None), "a b");
        assert_eq!(
            render(json!(["é"]), Some(HeaderEncoding::Json)),
            "UTF-8''%5B%22%C3%A9%22%5D"
        );
        assert_eq!(
            render(json!("é"), Some(HeaderEncoding::Base64url)),
            URL_SAFE_NO_PAD.encode("é")
        );
    }

    /// Decodes what `header_value` sent: the inverse that proves the mapping injective.
    fn decode(sent: &str) -> String {
        match sent.strip_prefix(EXTENDED_PREFIX) {
            Some(rest) => {
                let attr_or_escape =
                    |b: u8| b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~%".contains(&b);
                assert!(rest.bytes().all(attr_or_escape), "{sent}");
                percent_encoding::percent_decode_str(rest)
                    .decode_utf8()
                    .unwrap()
                    .into_owned()
            }
            None => sent.to_owned(),
        }
    }

    #[test]
    fn every_rendering_decodes_back_to_itself() {
        let alphabet = [
            "", "a", "A", " ", "\t", "\r", "\n", "\0", "\u{7f}", "\u{85}", "é", "€", "%", "'", "U",
            "T", "F", "-", "8", "u", "t", "f", "\"", ",", "😀",
        ];
        let mut seen = std::collections::HashMap::new();
        // Every string of up to three symbols, plus the prefix-shaped ones.
        let mut inputs = vec![
            "UTF-8''".to_owned(),
            "UTF-8'".to_owned(),
            "utf-8''%41".to_owned(),
        ];
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    inputs.push(format!("{a}{b}{c}"));
                    inputs.push(format!("UTF-8''{a}{b}{c}"));
                }
            }
        }
        for input in inputs {
            let sent = render(json!(input), None);
            assert_eq!(decode(&sent), input, "{sent}");
            if let Some(other) = seen.insert(sent.clone(), input.clone()) {
                assert_eq!(other, input, "two values sent as {sent}");
            }
        }
    }
}
