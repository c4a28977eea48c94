//! Verifying a token (or reusing the verified session of a byte-identical one), loading the
//! user's document, and the revocation checks that read both.

use super::Decider;
use crate::claims::Identity;
use crate::error::Reject;
use crate::expansion::Context;
use crate::explain::{note, step, Trace};
use crate::token_cache::{Prerendered, Session, TokenDigest};
use crate::userdata::{UserData, UserRecord};
use crate::verify::now_seconds;
use serde_json::{json, Value};
use std::sync::Arc;

impl Decider {
    /// The user's document, with the checks that need nothing but the document itself
    /// (required, blocked, expired).
    pub(super) async fn load_user_data(
        &self,
        user_data: &UserData,
        user_id: &str,
        trace: &mut Option<&mut Trace>,
    ) -> Result<Arc<UserRecord>, Reject> {
        let cached = trace.as_ref().and_then(|_| user_data.cached(user_id));
        let record = user_data.lookup(user_id).await.map_err(Reject::from);
        let record = step(trace, "user_data", record, |_| json!({"user_id": user_id}))?;
        note(trace, |t| t.used_user_data(&record, cached));
        let admitted = user_data.admit(&record);
        step(
            trace,
            "user_data",
            admitted,
            |_| json!({"blocked": record.blocked, "expired": record.expired()}),
        )?;
        Ok(record)
    }

    /// Revocation, against the user record the cache holds now (kept fresh by change streams) and
    /// the current list, so a revocation reaches tokens whose verification is cached. A token
    /// without `iat` cannot prove it is newer than `tokens_valid_after`: "log out everywhere"
    /// refuses it too.
    pub(super) fn check_revoked(
        &self,
        session: &Session,
        record: Option<&UserRecord>,
    ) -> Result<(), Reject> {
        if let Some(after) = record.and_then(|r| r.tokens_valid_after) {
            if !session.iat().is_some_and(|iat| iat >= after) {
                self.metrics.revocation.refused_valid_after.inc();
                return Err(Reject::TokenRevoked);
            }
        }
        match &self.revocation {
            Some(list) => list.check(session.jti()),
            None => Ok(()),
        }
    }

    /// Verify and map claims, or reuse the result for a byte-identical token.
    /// With a trace, the cache is bypassed both ways: every check runs, and what an explain
    /// saw never serves a real request.
    pub(super) async fn session(
        &self,
        token: &str,
        key: TokenDigest,
        trace: &mut Option<&mut Trace>,
    ) -> Result<Arc<Session>, Reject> {
        let traced = trace.is_some();
        if !traced {
            let valid = |v: &_| self.verifier.still_valid(v, now_seconds());
            if let Some(session) = self.token_cache.get(&key, valid) {
                return Ok(session);
            }
        }
        let verified = self
            .verifier
            .verify_traced(token, trace.as_deref_mut())
            .await?;
        let provider = &self.verifier.providers[verified.proof.provider];
        let data = self.mappings[verified.proof.provider].map(&verified.claims);
        let data = step(trace, "metadata", data, |_| Value::Null)?;
        note(trace, |t| t.metadata = Some(data.clone()));
        // `iat` is read only by `tokens_valid_after` (a user data field) and shown beside the
        // revocation list; a session keeps it only when one of them is configured.
        let iat = verified
            .claims
            .get("iat")
            .and_then(serde_json::Value::as_f64)
            .filter(|_| self.user_data.is_some() || self.revocation.is_some());
        let jti = match &self.revocation {
            Some(_) => verified
                .claims
                .get("jti")
                .and_then(serde_json::Value::as_str)
                .map(Box::from),
            None => None,
        };
        let mut identity = Identity {
            id: verified.user_id,
            provider: provider.name.clone(),
            data: Arc::new(data),
            token: verified.claims,
        };
        // Headers that depend on the token alone are rendered once, while the claims are here.
        let rendered = if !self.headers.needs_user_data && !self.headers.needs_request {
            let ctx = Context {
                identity: &identity,
                custom_data: None,
                permissions: None,
                request: None,
            };
            let rendered = self.headers.render(&ctx)?;
            Prerendered::pack(&rendered, self.headers.names())
        } else {
            None
        };
        if !self.keep_claims {
            identity.token = self.token_cache.empty_map();
        }
        if !self.keep_mapped_data {
            identity.data = self.token_cache.empty_map();
        }
        let session = Arc::new(Session::new(verified.proof, identity, rendered, iat, jti));
        if !traced {
            self.token_cache.insert(key, session.clone());
        }
        Ok(session)
    }
}
