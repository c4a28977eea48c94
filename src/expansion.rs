//! `%%` expansions (Atlas's JSON expression variables) shared by forward headers, rules and
//! /userinfo. Parsed once at config load; resolved per request against a [`Context`].

use crate::claims::{ClaimPath, Identity};
use crate::client_cert::ClientCert;
use crate::json_view::Resolved;
use crate::packed_json::PackedRef;
use serde_json::Value;
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expansion {
    UserId,
    UserProvider,
    /// `%%user.data[.path]`: the mapped metadata fields.
    UserData(Option<ClaimPath>),
    /// `%%user.custom_data[.path]`: the user's document from the user data source.
    CustomData(Option<ClaimPath>),
    /// `%%user.permissions`: union of the permissions of the user's roles.
    Permissions,
    /// `%%token[.path]`: any verified claim.
    Token(Option<ClaimPath>),
    RequestMethod,
    RequestPath,
    RequestRemoteIp,
    /// `%%request.client_cert.subject`: the verified listener client certificate's subject.
    ClientCertSubject,
    /// `%%request.client_cert.san`: its subject alternative names, as a list of strings.
    ClientCertSan,
}

/// Which expansions a config location may use.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    pub user_data: bool,
    pub request: bool,
}

impl Expansion {
    pub fn parse(text: &str, scope: Scope) -> Result<Self, String> {
        let rest = text
            .strip_prefix("%%")
            .ok_or_else(|| format!("{text:?} is not an expansion (expected e.g. \"%%user.id\")"))?;
        let with_path = |prefix: &str| -> Option<Result<Option<ClaimPath>, String>> {
            if rest == prefix {
                Some(Ok(None))
            } else {
                rest.strip_prefix(prefix)?
                    .strip_prefix('.')
                    .map(|p| ClaimPath::parse(p).map(Some))
            }
        };
        let expansion = match rest {
            "user.id" => Expansion::UserId,
            "user.provider" => Expansion::UserProvider,
            "user.permissions" => Expansion::Permissions,
            "request.method" => Expansion::RequestMethod,
            "request.path" => Expansion::RequestPath,
            "request.remoteIPAddress" => Expansion::RequestRemoteIp,
            "request.client_cert.subject" => Expansion::ClientCertSubject,
            "request.client_cert.san" => Expansion::ClientCertSan,
            _ => {
                if let Some(path) = with_path("user.data") {
                    Expansion::UserData(path?)
                } else if let Some(path) = with_path("user.custom_data") {
                    Expansion::CustomData(path?)
                } else if let Some(path) = with_path("token") {
                    Expansion::Token(path?)
                } else {
                    return Err(format!(
                        "unknown expansion {text:?} (known: %%user.id, %%user.provider, %%user.data.<path>, \
                         %%user.custom_data.<path>, %%user.permissions, %%token.<path>, %%request.method, \
                         %%request.path, %%request.remoteIPAddress, %%request.client_cert.subject, \
                         %%request.client_cert.san)"
                    ));
                }
            }
        };
        if !scope.user_data
            && matches!(expansion, Expansion::CustomData(_) | Expansion::Permissions)
        {
            return Err(format!("{text:?} needs a `user_data` section"));
        }
        if !scope.request
            && matches!(
                expansion,
                Expansion::RequestMethod | Expansion::RequestPath | Expansion::RequestRemoteIp
            )
        {
            return Err(format!(
                "{text:?} is only available in rules (of the request's facts, headers may use \
                 %%request.client_cert.subject and %%request.client_cert.san)"
            ));
        }
        Ok(expansion)
    }

    pub fn needs_claims(&self) -> bool {
        matches!(self, Expansion::Token(_))
    }

    /// `%%user.data`: the mapped metadata fields, which cached sessions drop unless read later.
    pub fn needs_mapped_data(&self) -> bool {
        matches!(self, Expansion::UserData(_))
    }

    /// Facts of the request itself: a value that uses one is rendered for each request.
    pub fn needs_request(&self) -> bool {
        matches!(
            self,
            Expansion::ClientCertSubject | Expansion::ClientCertSan
        )
    }

    pub fn needs_user_data(&self) -> bool {
        matches!(self, Expansion::CustomData(_) | Expansion::Permissions)
    }

    /// The value, as readers that compare rather than keep want it: custom data stays packed,
    /// read in place, and string facts are borrowed, so a rule allocates nothing.
    pub fn resolve_json<'a>(&self, ctx: &Context<'a>) -> Option<Resolved<'a>> {
        Some(match self {
            Expansion::UserId => Resolved::Str(&ctx.identity.id),
            Expansion::UserProvider => Resolved::Str(&ctx.identity.provider),
            Expansion::UserData(None) => {
                Resolved::Owned(Value::Object((*ctx.identity.data).clone()))
            }
            Expansion::UserData(Some(p)) => Resolved::Borrowed(p.get_in(&ctx.identity.data)?),
            Expansion::Token(None) => Resolved::Owned(Value::Object((*ctx.identity.token).clone())),
            Expansion::Token(Some(p)) => Resolved::Borrowed(p.get_in(&ctx.identity.token)?),
            Expansion::CustomData(path) => Resolved::Packed(custom_data(path.as_ref(), ctx)?),
            Expansion::Permissions => Resolved::Borrowed(ctx.permissions?),
            Expansion::RequestMethod => Resolved::Str(ctx.request?.method),
            Expansion::RequestPath => Resolved::Str(ctx.request?.path),
            Expansion::RequestRemoteIp => {
                Resolved::Owned(Value::String(ctx.request?.remote_ip.to_string()))
            }
            Expansion::ClientCertSubject => Resolved::Str(&ctx.request?.client_cert?.subject),
            Expansion::ClientCertSan => Resolved::Owned(Value::Array(
                ctx.request?
                    .client_cert?
                    .san
                    .iter()
                    .map(|name| Value::String(name.clone()))
                    .collect(),
            )),
        })
    }

    /// The value as a `serde_json::Value`, for readers that keep or render it.
    pub fn resolve<'a>(&self, ctx: &Context<'a>) -> Option<Cow<'a, Value>> {
        self.resolve_json(ctx).map(Resolved::into_cow)
    }
}

/// `%%user.custom_data[.path]`: absent without user data, and `null` counts as absent.
fn custom_data<'a>(path: Option<&ClaimPath>, ctx: &Context<'a>) -> Option<PackedRef<'a>> {
    let root = ctx.custom_data?;
    match path {
        None => (!root.is_null()).then_some(root),
        Some(path) => path.get_packed(root),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub remote_ip: std::net::IpAddr,
    pub client_cert: Option<&'a ClientCert>,
}

/// Everything an expansion can refer to for one request.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub identity: &'a Identity,
    /// Packed because it stays cached for long; expansions unpack only the part they read.
    pub custom_data: Option<PackedRef<'a>>,
    pub permissions: Option<&'a Value>,
    pub request: Option<RequestFacts<'a>>,
}
