//! Change streams keep cached records fresh: a write to the users (or roles) collection reaches
//! the cache within one event round trip instead of one TTL.

use super::mongo::{canonical_id, error_code, unreachable, user_ids_of, MongoSource};
use futures_util::StreamExt;
use mongodb::bson::Document;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::error::Error;
use mongodb::options::FullDocumentType;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watched {
    Users,
    Roles,
}

/// Follows one collection until shutdown. Returns early only when the deployment cannot offer
/// change streams at all; the TTL is then the only freshness bound.
pub(crate) async fn follow(
    src: Arc<MongoSource>,
    which: Watched,
    active: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let collection = match (which, &src.roles) {
        (Watched::Users, _) => src.collection.clone(),
        (Watched::Roles, Some(roles)) => roles.collection.clone(),
        (Watched::Roles, None) => return,
    };
    // Only the users stream decides whether lookups are live.
    let active = (which == Watched::Users).then_some(active);
    let set_active = |on: bool| {
        if let Some(a) = &active {
            a.store(on, Ordering::Release);
        }
    };
    let mut token: Option<ResumeToken> = None;
    let mut backoff = MIN_BACKOFF;
    let mut outage_logged = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let opened = tokio::select! {
            opened = open(&src, &collection, token.clone()) => opened,
            _ = stopped(&mut shutdown) => return,
        };
        let resuming = token.is_some();
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(e) if unsupported(&e) => {
                tracing::warn!(
                    collection, error = %e,
                    "change streams are not available (they need a replica set or sharded cluster); user data stays cached for cache.ttl_seconds"
                );
                return;
            }
            Err(e) if resuming && !unreachable(&e) => {
                tracing::warn!(collection, error = %e, "cannot resume the change stream; starting a new one and refetching cached user data");
                token = None;
                continue;
            }
            Err(e) => {
                if !outage_logged {
                    tracing::warn!(collection, error = %e, "cannot open the change stream; retrying");
                    outage_logged = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped(&mut shutdown) => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if !resuming {
            // Whatever changed before this stream started was not seen.
            src.cache.mark_all_stale();
        }
        if outage_logged {
            tracing::info!(collection, "change stream reopened");
        }
        outage_logged = false;
        backoff = MIN_BACKOFF;
        set_active(true);
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = stopped(&mut shutdown) => return,
            };
            match next {
                Some(Ok(event)) => {
                    let ended = apply(&src, which, &event);
                    token = if ended { None } else { stream.resume_token() };
                    if ended {
                        break;
                    }
                }
                Some(Err(e)) => {
                    token = stream.resume_token().or(token);
                    tracing::warn!(collection, error = %e, "change stream interrupted; resuming");
                    break;
                }
                None => {
                    token = stream.resume_token().or(token);
                    break;
                }
            }
        }
        set_active(false);
        // Pace reconnects: an interrupted stream usually means the server is going away.
        tokio::select! {
            _ = tokio::time::sleep(MIN_BACKOFF) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

async fn open(
    src: &MongoSource,
    collection: &str,
    token: Option<ResumeToken>,
) -> Result<mongodb::change_stream::ChangeStream<ChangeStreamEvent<Document>>, Error> {
    let client = src.client().await?;
    let coll = MongoSource::users(client, &src.database, collection);
    coll.watch()
        .full_document(FullDocumentType::UpdateLookup)
        .resume_after(token)
        .into_future()
        .await
}

/// Applies one event; true when the stream has ended (collection dropped or renamed).
fn apply(src: &MongoSource, which: Watched, event: &ChangeStreamEvent<Document>) -> bool {
    src.metrics.change_events.inc();
    match (&event.operation_type, which) {
        (OperationType::Invalidate, _) => {
            src.cache.mark_all_stale();
            true
        }
        (OperationType::Drop | OperationType::Rename | OperationType::DropDatabase, _) => {
            src.cache.mark_all_stale();
            false
        }
        // Role definitions feed every user's permissions; which users hold a role is not known
        // here, so every entry is refetched on its next use.
        (_, Watched::Roles) => {
            src.cache.mark_all_stale();
            false
        }
        (_, Watched::Users) => {
            let ids = event
                .full_document
                .as_ref()
                .map(|d| user_ids_of(d, &src.fields.user_id))
                .unwrap_or_default();
            let doc_id = event
                .document_key
                .as_ref()
                .and_then(|k| k.get("_id"))
                .map(canonical_id);
            src.cache.invalidate(&ids, doc_id.as_deref());
            false
        }
    }
}

/// Codes of deployments without change streams: standalone (40573), an unknown stage (40324),
/// unsupported command (115) and missing privileges (13).
pub(crate) fn unsupported(e: &Error) -> bool {
    matches!(error_code(e), Some(40573 | 40324 | 115 | 13))
}

/// Resolves once shutdown is requested or its sender is gone.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}
