//! What the accept loop does when `accept` fails, and how many connections it lets in.
//!
//! Failures are nearly always resource exhaustion (EMFILE, ENFILE, ENOBUFS). Retrying at once
//! spins the CPU, and a warning per retry floods the log while the process waits for
//! descriptors to come back (open connections closing, idle ones timing out). So the delay
//! grows while the failures continue, and the warning is rate limited.
//!
//! `limits.max_connections` is one budget for the whole proxy listener, shared by every worker's
//! accept loop, so the cap does not depend on the number of cores.

use crate::config::{LimitsConfig, OnMaxConnections};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const FIRST_DELAY: Duration = Duration::from_millis(10);
/// Short enough that a freed descriptor is put back to use within a second.
const MAX_DELAY: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(super) struct Backoff {
    /// Failures since the last successful accept.
    failures: u64,
    delay: Duration,
    last_warning: Option<Instant>,
    /// Whether this run of failures was logged, so its end is logged too.
    announced: bool,
}

impl Backoff {
    /// Records a failure and returns how long to wait before accepting again.
    pub(super) fn failed(
        &mut self,
        listener: Option<SocketAddr>,
        error: &std::io::Error,
    ) -> Duration {
        self.failures += 1;
        self.delay = if self.failures == 1 {
            FIRST_DELAY
        } else {
            (self.delay * 2).min(MAX_DELAY)
        };
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
        {
            self.last_warning = Some(now);
            self.announced = true;
            tracing::warn!(
                listener = ?listener,
                %error,
                failures = self.failures,
                "accept failed; backing off (up to 1 s), next warning in 60 s at the earliest"
            );
        } else {
            tracing::debug!(listener = ?listener, %error, failures = self.failures, "accept failed");
        }
        self.delay
    }

    pub(super) fn succeeded(&mut self, listener: Option<SocketAddr>) {
        if self.failures == 0 {
            return;
        }
        if self.announced {
            tracing::info!(listener = ?listener, failures = self.failures, "accepting connections again");
        }
        self.failures = 0;
        self.announced = false;
    }
}

/// The proxy listener's connection budget and the count of its open connections.
pub struct Connections {
    /// None: no `limits.max_connections`.
    slots: Option<Arc<Semaphore>>,
    refuse: bool,
    open: Gauge,
    refused: Counter,
    last_warning: Mutex<Option<Instant>>,
}

/// Held by a connection's task for as long as the connection is open.
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Connections {
    pub fn new(limits: &LimitsConfig, open: Gauge, refused: Counter) -> Self {
        Self {
            slots: (limits.max_connections > 0)
                .then(|| Arc::new(Semaphore::new(limits.max_connections))),
            refuse: limits.on_max_connections == OnMaxConnections::Refuse,
            open,
            refused,
            last_warning: Mutex::new(None),
        }
    }

    /// No cap, counted nowhere (the admin listener).
    pub fn unlimited() -> Self {
        Self::new(
            &LimitsConfig::default(),
            Gauge::default(),
            Counter::default(),
        )
    }

    /// With `wait`, resolves once a slot is free. A worker waiting here serves the connection it
    /// has just accepted only then, and accepts no other meanwhile: the next ones wait in the
    /// kernel's backlog.
    pub(super) async fn wait_for_slot(&self) -> Option<OwnedSemaphorePermit> {
        match &self.slots {
            Some(slots) if !self.refuse => slots.clone().acquire_owned().await.ok(),
            _ => None,
        }
    }

    /// The slot of a connection just accepted, or None when it must be closed at once
    /// (`refuse` and every slot taken).
    pub(super) fn admit(
        &self,
        waited: Option<OwnedSemaphorePermit>,
        listener: Option<SocketAddr>,
        peer: SocketAddr,
    ) -> Option<Slot> {
        let permit = match (&self.slots, waited) {
            (_, Some(permit)) => Some(permit),
            (None, None) => None,
            (Some(slots), None) => match slots.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    self.refused.inc();
                    self.warn_refused(listener, peer);
                    return None;
                }
            },
        };
        self.open.inc();
        Some(Slot {
            _permit: permit,
            open: self.open.clone(),
        })
    }

    fn warn_refused(&self, listener: Option<SocketAddr>, peer: SocketAddr) {
        let now = Instant::now();
        let due = match self.last_warning.lock() {
            Ok(mut last) if last.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) => {
                *last = Some(now);
                true
            }
            _ => false,
        };
        if due {
            tracing::warn!(
                listener = ?listener,
                %peer,
                refused = self.refused.get(),
                "limits.max_connections reached: closing new connections \
                 (claimgate_connections_refused_total counts them; next warning in 60 s)"
            );
        } else {
            tracing::debug!(%peer, "limits.max_connections reached: connection closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_up_to_the_cap_and_resets_after_success() {
        let error = std::io::Error::from_raw_os_error(24);
        let mut backoff = Backoff::default();
        let delays: Vec<_> = (0..10).map(|_| backoff.failed(None, &error)).collect();
        assert_eq!(delays[0], FIRST_DELAY);
        assert_eq!(delays[1], FIRST_DELAY * 2);
        assert_eq!(delays[9], MAX_DELAY);
        assert!(backoff.announced);
        backoff.succeeded(None);
        assert_eq!(backoff.failed(None, &error), FIRST_DELAY);
        // The second run falls inside the warning interval of the first.
        assert!(!backoff.announced);
    }
}
