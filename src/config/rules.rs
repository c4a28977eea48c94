//! The `rules` and `userinfo` sections: per-route authentication and `allow_when` expressions
//! (compiled by `policy`), and the proxy's own /userinfo endpoint.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    None,
    Optional,
    #[default]
    Required,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Used in the 403 description and logs; defaults to `rules[i]`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matches: RuleMatch,
    #[serde(default)]
    pub auth: AuthMode,
    /// Atlas JSON expression over `%%user`, `%%token` and `%%request`.
    #[serde(default)]
    pub allow_when: Option<serde_json::Value>,
    /// OAuth scopes the token must all grant (`scope` or `scp`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// OAuth scopes of which the token must grant at least one.
    #[serde(default)]
    pub scopes_any: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMatch {
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    /// Match the path case-insensitively, for upstreams that route that way (IIS, some Spring).
    #[serde(default)]
    pub ignore_case: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserinfoConfig {
    #[serde(default = "default_userinfo_path")]
    pub path: String,
    /// Custom data properties (dot paths) and/or `permissions` to include.
    #[serde(default)]
    pub properties: Vec<String>,
}

fn default_userinfo_path() -> String {
    "/.claimgate/userinfo".to_owned()
}
