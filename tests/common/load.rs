//! Bounded client loops over keep-alive connections, for tests that change the proxy under load
//! (reload, drain): each counts what it sent and what came back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::task::JoinHandle;

#[derive(Debug, Default)]
pub struct Counts {
    pub sent: u32,
    /// Answered 200.
    pub ok: u32,
    /// Answered 200 with `Connection: close`.
    pub closing: u32,
    /// Every other status, and every connection error.
    pub failures: Vec<String>,
}

/// `loops` clients, each with its own keep-alive pool, sending `GET {url}{path}` with `token`
/// until `stop` is set.
pub fn keep_alive_loops(
    url: &str,
    path: &str,
    token: &str,
    loops: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<Counts>> {
    (0..loops)
        .map(|_| {
            let (target, token, stop) = (format!("{url}{path}"), token.to_owned(), stop.clone());
            tokio::spawn(async move {
                let client = super::http_client();
                let mut counts = Counts::default();
                while !stop.load(Ordering::SeqCst) {
                    counts.sent += 1;
                    match client.get(&target).bearer_auth(&token).send().await {
                        Ok(resp) if resp.status() == 200 => {
                            counts.ok += 1;
                            let close = resp
                                .headers()
                                .get("connection")
                                .is_some_and(|v| v == "close");
                            counts.closing += u32::from(close);
                        }
                        Ok(resp) => counts.failures.push(format!("status {}", resp.status())),
                        Err(e) => counts.failures.push(format!("error {e}")),
                    }
                }
                counts
            })
        })
        .collect()
}

/// Waits for the loops and adds up their counts.
pub async fn total(handles: Vec<JoinHandle<Counts>>) -> Counts {
    let mut all = Counts::default();
    for handle in handles {
        let counts = handle.await.unwrap();
        all.sent += counts.sent;
        all.ok += counts.ok;
        all.closing += counts.closing;
        all.failures.extend(counts.failures);
    }
    all
}
