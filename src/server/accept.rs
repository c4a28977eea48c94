//! What the accept loop does when `accept` fails.
//!
//! Failures are nearly always resource exhaustion (EMFILE, ENFILE, ENOBUFS). Retrying at once
//! spins the CPU, and a warning per retry floods the log while the process waits for
//! descriptors to come back (open connections closing, idle ones timing out). So the delay
//! grows while the failures continue, and the warning is rate limited.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
