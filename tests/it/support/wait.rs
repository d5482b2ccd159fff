//! How a test waits: on the condition itself, with a bound, never on a
//! fixed sleep.

use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, failing the test after 20 s. Tests
/// wait on the condition itself, never on a fixed sleep.
pub async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
