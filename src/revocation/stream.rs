//! Keeps the revocation list fresh: a change stream on the collection, with the resume rules of
//! the user data streams (resume after an interruption; when resuming is impossible, a new stream
//! and a full read). The stream is opened before the full read, so nothing written in between is
//! missed: events the read already saw are applied again, which changes nothing.

use super::Revocation;
use crate::userdata::{canonical_id, stopped, unreachable, unsupported};
use futures_util::StreamExt;
use mongodb::bson::Document;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::error::Error;
use mongodb::options::FullDocumentType;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often entries past their expiry leave memory (and an over-full list is read again).
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// Without change streams (a standalone server) the list is read again this often.
const POLL_EVERY: Duration = Duration::from_secs(5);

pub(super) async fn follow(list: Arc<Revocation>, mut shutdown: watch::Receiver<bool>) {
    let collection = list.collection.clone();
    let mut token: Option<ResumeToken> = None;
    let mut backoff = MIN_BACKOFF;
    let mut outage_logged = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let opened = tokio::select! {
            opened = open(&list, token.clone()) => opened,
            _ = stopped(&mut shutdown) => return,
        };
        let resuming = token.is_some();
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(e) if unsupported(&e) => {
                tracing::warn!(
                    collection, error = %e,
                    "change streams are not available (they need a replica set or sharded cluster); the revocation list is read again every {} s",
                    POLL_EVERY.as_secs()
                );
                return poll(list, shutdown).await;
            }
            Err(e) if resuming && !unreachable(&e) => {
                tracing::warn!(collection, error = %e, "cannot resume the revocation change stream; starting a new one and reading the list again");
                token = None;
                continue;
            }
            Err(e) => {
                list.stream_up(false);
                if !outage_logged {
                    tracing::warn!(collection, error = %e, "cannot open the revocation change stream; retrying");
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
            // Whatever changed before this stream started was not seen: read it all.
            if let Err(e) = list.load().await {
                tracing::warn!(collection, error = %e, "cannot read the revocation list; retrying");
                list.stream_up(false);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped(&mut shutdown) => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        }
        if outage_logged {
            tracing::info!(collection, "revocation change stream reopened");
        }
        outage_logged = false;
        backoff = MIN_BACKOFF;
        list.stream_up(true);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.tick().await;
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = prune.tick() => {
                    // Read again in the stream's loop, so no event interleaves with the swap.
                    if list.prune() {
                        if let Err(e) = list.load().await {
                            tracing::warn!(collection, error = %e, "cannot read the revocation list");
                        }
                    }
                    continue;
                }
                _ = stopped(&mut shutdown) => return,
            };
            match next {
                Some(Ok(event)) => {
                    let ended = apply(&list, &event);
                    token = if ended { None } else { stream.resume_token() };
                    if ended {
                        break;
                    }
                }
                Some(Err(e)) => {
                    token = stream.resume_token().or(token);
                    tracing::warn!(collection, error = %e, "revocation change stream interrupted; resuming");
                    break;
                }
                None => {
                    token = stream.resume_token().or(token);
                    break;
                }
            }
        }
        list.stream_up(false);
        tokio::select! {
            _ = tokio::time::sleep(MIN_BACKOFF) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

async fn open(
    list: &Revocation,
    token: Option<ResumeToken>,
) -> Result<ChangeStream<ChangeStreamEvent<Document>>, Error> {
    let client = list.src.client().await?;
    client
        .database(&list.database)
        .collection::<Document>(&list.collection)
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .resume_after(token)
        .into_future()
        .await
}

/// Applies one event; true when the stream has ended (collection dropped or renamed).
fn apply(list: &Revocation, event: &ChangeStreamEvent<Document>) -> bool {
    match &event.operation_type {
        OperationType::Invalidate => true,
        OperationType::Drop | OperationType::Rename | OperationType::DropDatabase => {
            list.clear();
            false
        }
        _ => {
            let doc_id = event
                .document_key
                .as_ref()
                .and_then(|k| k.get("_id"))
                .map(canonical_id);
            if let Some(doc_id) = doc_id {
                list.apply(&doc_id, event.full_document.as_ref());
            }
            false
        }
    }
}

/// Without change streams: read the whole list every [`POLL_EVERY`].
async fn poll(list: Arc<Revocation>, mut shutdown: watch::Receiver<bool>) {
    loop {
        match list.load().await {
            Ok(()) => list.stream_up(true),
            Err(e) => {
                list.stream_up(false);
                tracing::warn!(collection = list.collection, error = %e, "cannot read the revocation list");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}
