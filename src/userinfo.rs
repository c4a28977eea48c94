//! The `/userinfo` document: who a verified caller is, with the custom data properties the config
//! lists.

use crate::config::{KeyError, UserinfoConfig};
use crate::expansion::{Context, Expansion, Scope};
use serde_json::{Map, Value};

/// The compiled `userinfo` section.
#[derive(Debug, Clone)]
pub struct Userinfo {
    /// Where the document is served.
    pub path: String,
    /// Output key (the property as configured) and where its value comes from.
    properties: Vec<(String, Expansion)>,
}

const FIXED_KEYS: &[&str] = &["id", "provider", "data"];

impl Userinfo {
    /// `user_data` says whether a `user_data` section is configured; properties need one.
    pub fn compile(cfg: &UserinfoConfig, user_data: bool) -> Result<Self, KeyError> {
        if !cfg.path.starts_with('/') {
            return Err(KeyError::new(
                "userinfo.path",
                format!("must start with `/` (got {:?})", cfg.path),
            ));
        }
        if cfg.path.contains(['?', '#']) {
            return Err(KeyError::new(
                "userinfo.path",
                "must be a path without query or fragment",
            ));
        }
        let scope = Scope {
            user_data,
            request: false,
        };
        let mut properties: Vec<(String, Expansion)> = Vec::with_capacity(cfg.properties.len());
        for (i, name) in cfg.properties.iter().enumerate() {
            let key = format!("userinfo.properties[{i}]");
            if FIXED_KEYS.contains(&name.as_str()) {
                return Err(KeyError::new(
                    key,
                    format!("{name:?} is always in the document and cannot be a property"),
                ));
            }
            if properties.iter().any(|(n, _)| n == name) {
                return Err(KeyError::new(key, format!("{name:?} is listed twice")));
            }
            let source = if name == "permissions" {
                "%%user.permissions".to_owned()
            } else {
                format!("%%user.custom_data.{name}")
            };
            let expansion = Expansion::parse(&source, scope).map_err(|e| KeyError::new(key, e))?;
            properties.push((name.clone(), expansion));
        }
        Ok(Self {
            path: cfg.path.clone(),
            properties,
        })
    }

    /// Whether rendering needs the user's document or permissions loaded.
    pub fn needs_user_data(&self) -> bool {
        !self.properties.is_empty()
    }

    /// `{"id", "provider", "data", <property>...}`; absent properties are left out.
    pub fn render(&self, ctx: &Context<'_>) -> Value {
        let mut doc = Map::new();
        doc.insert("id".into(), Value::String(ctx.identity.id.clone()));
        doc.insert(
            "provider".into(),
            Value::String(ctx.identity.provider.to_string()),
        );
        doc.insert("data".into(), Value::Object((*ctx.identity.data).clone()));
        for (name, expansion) in &self.properties {
            if let Some(value) = expansion.resolve(ctx) {
                doc.insert(name.clone(), value.into_owned());
            }
        }
        Value::Object(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::Identity;
    use crate::packed_json::PackedJson;
    use serde_json::json;
    use std::sync::Arc;

    fn cfg(path: &str, properties: &[&str]) -> UserinfoConfig {
        UserinfoConfig {
            path: path.into(),
            properties: properties.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn identity() -> Identity {
        Identity {
            id: "u1".into(),
            provider: Arc::from("corp"),
            data: Arc::new(
                json!({"email": "ann@example.com"})
                    .as_object()
                    .cloned()
                    .unwrap(),
            ),
            token: Arc::new(json!({"sub": "u1"}).as_object().cloned().unwrap()),
        }
    }

    #[test]
    fn renders_identity_and_listed_properties() {
        let u = Userinfo::compile(
            &cfg(
                "/.claimgate/userinfo",
                &[
                    "userGroup",
                    "email",
                    "address.city",
                    "permissions",
                    "missing",
                ],
            ),
            true,
        )
        .unwrap();
        assert!(u.needs_user_data());
        let identity = identity();
        let custom = PackedJson::pack(
            &json!({"userGroup": "staff", "email": null, "address": {"city": "Oslo"}}),
        );
        let permissions = json!(["read", "write"]);
        let ctx = Context {
            identity: &identity,
            custom_data: Some(custom.root()),
            permissions: Some(&permissions),
            request: None,
        };
        assert_eq!(
            u.render(&ctx),
            json!({
                "id": "u1",
                "provider": "corp",
                "data": {"email": "ann@example.com"},
                "userGroup": "staff",
                "address.city": "Oslo",
                "permissions": ["read", "write"],
            })
        );
    }

    #[test]
    fn without_user_document_only_identity_is_rendered() {
        let u = Userinfo::compile(&cfg("/me", &["userGroup", "permissions"]), true).unwrap();
        let identity = identity();
        let ctx = Context {
            identity: &identity,
            custom_data: None,
            permissions: None,
            request: None,
        };
        assert_eq!(
            u.render(&ctx),
            json!({"id": "u1", "provider": "corp", "data": {"email": "ann@example.com"}})
        );
        let plain = Userinfo::compile(&cfg("/me", &[]), false).unwrap();
        assert!(!plain.needs_user_data());
        assert_eq!(plain.render(&ctx), u.render(&ctx));
    }

    #[test]
    fn config_errors_name_their_key() {
        let err =
            |c: UserinfoConfig, user_data: bool| Userinfo::compile(&c, user_data).unwrap_err();
        assert_eq!(err(cfg("me", &[]), true).key, "userinfo.path");
        assert_eq!(err(cfg("/me?x=1", &[]), true).key, "userinfo.path");
        let e = err(cfg("/me", &["email"]), false);
        assert_eq!(e.key, "userinfo.properties[0]");
        assert!(e.reason.contains("user_data"), "{}", e.reason);
        let e = err(cfg("/me", &["permissions"]), false);
        assert_eq!(e.key, "userinfo.properties[0]");
        assert!(e.reason.contains("user_data"), "{}", e.reason);
        assert_eq!(
            err(cfg("/me", &["email", "email"]), true).key,
            "userinfo.properties[1]"
        );
        assert_eq!(err(cfg("/me", &["id"]), true).key, "userinfo.properties[0]");
        assert_eq!(
            err(cfg("/me", &["a..b"]), true).key,
            "userinfo.properties[0]"
        );
    }
}
