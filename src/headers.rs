//! Identity headers: which client-supplied headers are stripped, and how the trusted ones are
//! rendered from the caller's identity.

use crate::config::{ForwardConfig, HeaderEncoding, HeaderMapping, KeyError};
use crate::error::Reject;
use crate::expansion::{Context, Expansion, Scope};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use std::sync::Arc;

struct Mapping {
    name: HeaderName,
    source: String,
    expansion: Expansion,
    encoding: Option<HeaderEncoding>,
    required: bool,
}

/// The compiled `forward` section.
pub struct HeaderPlan {
    mappings: Vec<Mapping>,
    user_header: Option<HeaderName>,
    /// Every name `render` may emit, in its order: what a packed rendering refers to.
    names: Arc<[HeaderName]>,
    /// Every header a client must never be able to supply itself.
    strip: Vec<HeaderName>,
    pub pass_authorization: bool,
    /// Whether rendering needs the user's document; if not, one rendering per token can be cached.
    pub needs_user_data: bool,
    /// Whether rendering reads the request's own facts (`%%request.client_cert.*`): then every
    /// request is rendered anew, never reused from a token or a user.
    pub needs_request: bool,
    /// Whether a per-request rendering reads `%%token`.
    pub needs_claims: bool,
    /// Whether a per-request rendering reads `%%user.data` (the user header always does).
    pub needs_mapped_data: bool,
    /// `Some(limit)` when user data is configured: the user header carries `custom_data` up to
    /// this many bytes of JSON.
    custom_data_limit: Option<usize>,
    oversize: Counter,
}

pub type Rendered = Vec<(HeaderName, HeaderValue)>;

fn header_name(text: &str, key: &str) -> Result<HeaderName, KeyError> {
    let name = HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| KeyError::new(key, format!("{text:?} is not a valid header name")))?;
    if name == http::header::AUTHORIZATION
        || name == http::header::HOST
        || name == http::header::COOKIE
    {
        return Err(KeyError::new(
            key,
            format!("{text:?} cannot carry identity"),
        ));
    }
    Ok(name)
}

impl HeaderPlan {
    pub fn compile(
        forward: &ForwardConfig,
        custom_data_limit: Option<usize>,
        oversize: Counter,
    ) -> Result<Self, KeyError> {
        let user_data = custom_data_limit.is_some();
        let scope = Scope {
            user_data,
            request: false,
        };
        let mut mappings = Vec::with_capacity(forward.headers.len());
        for (name, mapping) in &forward.headers {
            let key = format!("forward.headers.{name}");
            let (source, encoding, required) = match mapping {
                HeaderMapping::Short(from) => (from, None, false),
                HeaderMapping::Long(long) => (&long.from, long.encoding, long.required),
            };
            let expansion =
                Expansion::parse(source, scope).map_err(|e| KeyError::new(key.as_str(), e))?;
            mappings.push(Mapping {
                name: header_name(name, &key)?,
                source: source.clone(),
                expansion,
                encoding,
                required,
            });
        }
        let user_header = match &forward.user_header {
            Some(name) => Some(header_name(name, "forward.user_header")?),
            None => None,
        };
        let mut strip: Vec<HeaderName> = mappings.iter().map(|m| m.name.clone()).collect();
        strip.extend(user_header.clone());
        let names = Arc::from(strip.as_slice());
        strip.dedup();
        let needs_user_data = user_data
            && (user_header.is_some() || mappings.iter().any(|m| m.expansion.needs_user_data()));
        let needs_request = mappings.iter().any(|m| m.expansion.needs_request());
        let per_request = needs_user_data || needs_request;
        let needs_claims = per_request && mappings.iter().any(|m| m.expansion.needs_claims());
        // The user header carries `data`; it is rendered per request when it depends on user data.
        let needs_mapped_data = per_request
            && (user_header.is_some() || mappings.iter().any(|m| m.expansion.needs_mapped_data()));
        Ok(Self {
            mappings,
            user_header,
            names,
            strip,
            pass_authorization: forward.pass_authorization,
            needs_claims,
            needs_mapped_data,
            needs_user_data,
            needs_request,
            custom_data_limit,
            oversize,
        })
    }

    /// base64url(JSON {id, provider, data[, custom_data]}), so any content survives header
    /// transport. An oversized `custom_data` is left out whole (logged and counted), never cut.
    fn user_header_value(&self, ctx: &Context<'_>) -> HeaderValue {
        let mut doc = serde_json::json!({
            "id": ctx.identity.id,
            "provider": &*ctx.identity.provider,
            "data": &*ctx.identity.data,
        });
        if let (Some(limit), Some(custom), Value::Object(map)) =
            (self.custom_data_limit, ctx.custom_data, &mut doc)
        {
            let size = serde_json::to_vec(custom).map_or(usize::MAX, |v| v.len());
            if size <= limit {
                map.insert("custom_data".into(), custom.clone());
            } else {
                self.oversize.inc();
                tracing::warn!(
                    user = %crate::log_safe::Escaped(&ctx.identity.id), size, limit,
                    "custom_data left out of the user header: larger than user_data.custom_data_max_bytes"
                );
            }
        }
        encoded(doc.to_string().as_bytes())
    }

    /// Removes every identity header (all copies) a client sent. Runs before anything else so that
    /// no path, rejected or allowed, can carry a client-chosen identity.
    ///
    /// CGI, WSGI, PHP and Rack read `X_User_Id` and `X-User-Id` as one variable
    /// (`HTTP_X_USER_ID`), so `_` and `-` count as the same character here.
    pub fn strip(&self, headers: &mut HeaderMap) {
        for name in &self.strip {
            headers.remove(name);
        }
        let lookalikes: Vec<HeaderName> = self.lookalikes(headers).cloned().collect();
        for name in lookalikes {
            headers.remove(name);
        }
    }

    /// The names in `headers` that [`HeaderPlan::strip`] would remove, for a door that cannot
    /// edit the request itself and asks its front proxy to (Envoy's `headers_to_remove`).
    pub fn client_copies<'h>(
        &'h self,
        headers: &'h HeaderMap,
    ) -> impl Iterator<Item = &'h HeaderName> {
        self.strip
            .iter()
            .filter(|name| headers.contains_key(*name))
            .chain(self.lookalikes(headers))
    }

    /// `_` spellings of managed headers (`x_user_id` for `x-user-id`): some servers read them
    /// as the same CGI variable.
    fn lookalikes<'h>(&'h self, headers: &'h HeaderMap) -> impl Iterator<Item = &'h HeaderName> {
        headers
            .keys()
            .filter(|name| name.as_str().contains('_'))
            .filter(|name| {
                self.strip
                    .iter()
                    .any(|managed| same_variable(managed, name))
            })
    }

    /// The names of the headers this plan renders, shared by every token's packed rendering.
    pub fn names(&self) -> &Arc<[HeaderName]> {
        &self.names
    }

    pub fn render(&self, ctx: &Context<'_>) -> Result<Rendered, Reject> {
        let mut out = Vec::with_capacity(self.mappings.len() + 1);
        for m in &self.mappings {
            match m.expansion.resolve(ctx) {
                Some(value) => out.push((m.name.clone(), header_value(&value, m.encoding))),
                None if m.required => {
                    return Err(Reject::ClaimMissing(
                        m.source.trim_start_matches('%').to_owned(),
                    ))
                }
                None => {}
            }
        }
        if let Some(name) = &self.user_header {
            out.push((name.clone(), self.user_header_value(ctx)));
        }
        Ok(out)
    }
}

/// Whether two header names become the same CGI variable (`-` and `_` both map to `_`).
fn same_variable(a: &HeaderName, b: &HeaderName) -> bool {
    let fold = |c: u8| if c == b'-' { b'_' } else { c };
    let (a, b) = (a.as_str().as_bytes(), b.as_str().as_bytes());
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold(*x) == fold(*y))
}

fn encoded(bytes: &[u8]) -> HeaderValue {
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
    fn underscore_spellings_of_managed_headers_are_stripped() {
        let plan =
            HeaderPlan::compile(&ForwardConfig::default(), None, Counter::default()).unwrap();
        let mut headers = HeaderMap::new();
        for name in [
            "x_user_id",
            "x-user_id",
            "x_claimgate-user",
            "x-user-id",
            "x_other",
        ] {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static("admin"),
            );
        }
        plan.strip(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x_other"]);
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
