//! Identity headers: which client-supplied headers are stripped, and how the trusted ones are
//! rendered from the caller's identity.

use crate::config::{ForwardConfig, HeaderEncoding, HeaderMapping, KeyError};
use crate::error::Reject;
use crate::expansion::{Context, Expansion, Scope};
use http::{HeaderMap, HeaderName, HeaderValue};
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use std::sync::Arc;

mod value;

use value::encoded;
pub use value::header_value;

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
            let custom = custom.to_value();
            let size = serde_json::to_vec(&custom).map_or(usize::MAX, |v| v.len());
            if size <= limit {
                map.insert("custom_data".into(), custom);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
