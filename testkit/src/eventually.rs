//! The one polling wait of the tests: a condition checked every 50 ms until
//! it holds, with a bound, and a panic naming what never happened.

use std::future::Future;
use std::time::Duration;

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(50);

/// Polls `check` until it is true; panics with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_or(limit, what, String::new, check).await
}

/// [`eventually`], with `context()` (e.g. a process' log) in the panic message.
pub async fn eventually_or<F, Fut>(limit: Duration, what: &str, context: impl Fn() -> String, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for: {what}\n{}", context());
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let calls = AtomicU32::new(0);
        eventually(Duration::from_secs(5), "third call", || async {
            calls.fetch_add(1, Ordering::SeqCst) >= 2
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out waiting for: never\nthe context")]
    async fn panics_with_what_and_context_at_the_limit() {
        eventually_or(
            Duration::from_millis(100),
            "never",
            || "the context".to_string(),
            || async { false },
        )
        .await;
    }
}
