//! Waiting for a condition with a deadline instead of sleeping for a guessed time.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::TestResult;

/// Polls `cond` every 20 ms until it holds or `timeout` passes; the error names `what`.
pub async fn wait_until<F: FnMut() -> bool>(
    timeout: Duration,
    what: &str,
    mut cond: F,
) -> TestResult {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Polls `f` every 100 ms until it returns `Some`, and returns that value; fails at once when
/// `f` fails, or after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> TestResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = TestResult<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_value_and_times_out_naming_what() {
        let mut n = 0;
        let v = eventually(Duration::from_secs(5), "three calls", || {
            n += 1;
            let n = n;
            async move { Ok((n >= 3).then_some(n)) }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
        let e = eventually(Duration::from_millis(50), "never", || async {
            Ok(None::<()>)
        })
        .await
        .unwrap_err();
        assert!(e.to_string().contains("waiting for never"), "{e}");
        let e = wait_until(Duration::from_millis(50), "false", || false)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("waiting for false"), "{e}");
    }
}
