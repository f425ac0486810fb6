//! Connecting to RabbitMQ with a reconnect loop of our own: every component (the inbox
//! consumer, one relay per target) owns its connection, and on any error drops it and connects
//! again after a capped, jittered backoff, forever. Redelivery after a reconnect is harmless
//! because every handler is idempotent.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Capped exponential backoff with jitter (50-100 % of the step), so a fleet of nodes does not
/// reconnect in lockstep after a broker restart.
pub fn backoff(attempt: u32) -> Duration {
    // Capped at 3 s: a broker back from a restart is found within ~3 s, and a fleet of nodes
    // retrying every 1.5-3 s is no load for a broker.
    let base_ms = 100u64.saturating_mul(1u64 << attempt.min(7)).min(3_000);
    let jitter = rand::rng().random_range(base_ms / 2..=base_ms);
    Duration::from_millis(jitter)
}

/// The URL with its password hidden, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Connects, retrying until it works or `cancel` fires (then `None`).
pub async fn connect(url: &str, cancel: &CancellationToken, who: &str) -> Option<Connection> {
    let mut attempt = 0u32;
    loop {
        let props = ConnectionProperties::default().with_connection_name(who.into());
        let outcome = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(10), Connection::connect(url, props)) => r,
            () = cancel.cancelled() => return None,
        };
        match outcome {
            Ok(Ok(conn)) => {
                if attempt > 0 {
                    tracing::info!(broker = %redact(url), who, attempts = attempt, "connected to broker");
                }
                return Some(conn);
            }
            Ok(Err(e)) => {
                if attempt.is_multiple_of(10) {
                    tracing::warn!(broker = %redact(url), who, error = %e, attempt, "cannot connect to broker; retrying");
                }
            }
            Err(_) => {
                tracing::warn!(broker = %redact(url), who, "broker connection timed out; retrying")
            }
        }
        attempt += 1;
        tokio::select! {
            () = tokio::time::sleep(backoff(attempt)) => {}
            () = cancel.cancelled() => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        for a in 0..40 {
            let d = backoff(a);
            assert!(d <= Duration::from_secs(3), "{d:?}");
            assert!(d >= Duration::from_millis(50));
        }
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redact("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact("amqp://host"), "amqp://host");
    }
}
