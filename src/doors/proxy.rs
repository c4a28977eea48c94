//! The inline proxy: strip the client's identity headers, decide, then forward the request with
//! the trusted ones, or answer the rejection.

use crate::access_log::{content_length, finish, Facts, RequestId, X_REQUEST_ID};
use crate::client_cert::ClientCert;
use crate::decision::{Admission, Decider, Decision};
use crate::error::{is_grpc, Body};
use crate::forward::{strip_connection_listed, Forwarder};
use http::{Request, Response};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub async fn handle(
    decider: &Decider,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    forwarder: &Forwarder,
) -> Response<Body> {
    let started = Instant::now();
    let grpc = is_grpc(req.headers());
    // Taken before anything else reads the headers, so a rejection carries it too.
    let request_id = RequestId::of(req.headers());
    let request_bytes = content_length(req.headers());
    let method = req.method().clone();
    let uri = req.uri().clone();
    let mut upstream = None;
    // Strip first: no path, rejected or allowed, may carry a client-chosen identity.
    decider.strip_identity_headers(req.headers_mut());
    // A `Connection: x-user-id` must not be able to make the forwarder drop injected headers.
    strip_connection_listed(req.headers_mut());
    let outcome = decider
        .decide(Admission {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            peer,
            client_cert: req.extensions().get::<Arc<ClientCert>>().map(|c| &**c),
        })
        .await;
    let answer = match outcome.decision {
        Ok(Decision::Allow(allow)) => {
            let headers = req.headers_mut();
            for (name, value) in allow.identity.iter() {
                headers.insert(name.clone(), value);
            }
            let mut uri = allow.uri.unwrap_or_else(|| req.uri().clone());
            // Every forwarded request, anonymous ones included, obeys `pass_authorization`.
            decider.remove_tokens(req.headers_mut(), &mut uri);
            *req.uri_mut() = uri;
            req.headers_mut()
                .insert(X_REQUEST_ID, request_id.header().clone());
            let span = match (&decider.telemetry, &outcome.trail.trace) {
                (Some(telemetry), Some(parent)) => {
                    let span = telemetry.start("forward", parent);
                    telemetry.inject(&span, parent, req.headers_mut());
                    Some(span)
                }
                _ => None,
            };
            let asked = Instant::now();
            let response = forwarder.forward(req, peer).await;
            upstream = Some(asked.elapsed());
            if let (Some(mut span), Err(reject)) = (span, &response) {
                crate::telemetry::fail(&mut span, reject.code());
            }
            response
        }
        Ok(Decision::Respond(response)) => Ok(response),
        Err(reject) => Err(reject),
    };
    let line = decider.record(
        answer.as_ref().map(Response::status),
        outcome.trail,
        &uri,
        Facts {
            method: &method,
            request_id: &request_id,
            peer,
            started,
            upstream,
            request_bytes,
        },
    );
    let response = answer.unwrap_or_else(|reject| match grpc {
        true => reject.into_grpc_response(),
        false => reject.into_response(),
    });
    finish(line, &request_id, response)
}
