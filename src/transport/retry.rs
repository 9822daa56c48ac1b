//! Retry with exponential backoff, for failures a later attempt can cure.

use std::future::Future;
use std::time::Duration;

use super::config::RetryConfig;
use super::error::TransportError;

/// The pause before attempt `next_attempt` (2, 3, …): `initial_delay_ms` doubled per
/// failure since the first, capped at `max_delay_ms`.
pub(super) fn backoff_delay(retry: &RetryConfig, next_attempt: u32) -> Duration {
    let doublings = next_attempt.saturating_sub(2);
    // Saturating on purpose: past 2^63 the delay is capped at `max_delay_ms` anyway.
    let factor = 2u64.saturating_pow(doublings);
    let delay_ms = retry
        .initial_delay_ms
        .saturating_mul(factor)
        .min(retry.max_delay_ms);
    Duration::from_millis(delay_ms)
}

/// Runs `attempt(n)` for n = 1, 2, … until it succeeds, fails with an error that is
/// not [retryable](TransportError::is_retryable), or `max_attempts` is used up.
/// Returns the value and the number of the attempt that produced it.
pub(super) async fn with_retry<T, F, Fut>(
    retry: &RetryConfig,
    what: &str,
    mut attempt: F,
) -> Result<(T, u32), TransportError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, TransportError>>,
{
    let mut number = 1;
    loop {
        let error = match attempt(number).await {
            Ok(value) => return Ok((value, number)),
            Err(error) if !error.is_retryable() => return Err(error),
            Err(error) => error,
        };
        if number >= retry.max_attempts {
            return Err(if retry.max_attempts == 1 {
                error
            } else {
                TransportError::RetriesExhausted {
                    attempts: number,
                    last: Box::new(error),
                }
            });
        }
        let delay = backoff_delay(retry, number + 1);
        tracing::warn!(
            "{what}: attempt {number} of {} failed, retrying in {} ms: {error}",
            retry.max_attempts,
            delay.as_millis()
        );
        tokio::time::sleep(delay).await;
        number += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(max_attempts: u32) -> RetryConfig {
        RetryConfig {
            max_attempts,
            initial_delay_ms: 1,
            max_delay_ms: 4,
        }
    }

    fn refused() -> TransportError {
        TransportError::Connect {
            address: "127.0.0.1:1".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        }
    }

    #[test]
    fn delays_double_from_the_initial_and_stop_at_the_cap() {
        let policy = RetryConfig {
            max_attempts: 10,
            initial_delay_ms: 100,
            max_delay_ms: 1_000,
        };
        let delays: Vec<u128> = (2..=7)
            .map(|n| backoff_delay(&policy, n).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(backoff_delay(&policy, u32::MAX).as_millis(), 1_000);
    }

    #[tokio::test]
    async fn a_retryable_failure_is_retried_until_success() {
        let (value, attempts) = with_retry(&retry(5), "test", |n| async move {
            if n < 3 {
                Err(refused())
            } else {
                Ok(n * 10)
            }
        })
        .await
        .unwrap();
        assert_eq!((value, attempts), (30, 3));
    }

    #[tokio::test]
    async fn the_limit_ends_retrying_and_keeps_the_last_error() {
        let error = with_retry(&retry(3), "test", |_| async { Err::<(), _>(refused()) })
            .await
            .unwrap_err();
        match error {
            TransportError::RetriesExhausted { attempts, last } => {
                assert_eq!(attempts, 3);
                assert!(matches!(*last, TransportError::Connect { .. }));
            }
            other => panic!("expected RetriesExhausted, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_final_failure_is_not_retried() {
        let mut calls = 0;
        let error = with_retry(&retry(5), "test", |_| {
            calls += 1;
            async {
                Err::<(), _>(TransportError::HostKeyMismatch {
                    address: "h:22".into(),
                    offered: "SHA256:a".into(),
                    expected: "SHA256:b".into(),
                })
            }
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 1);
        assert!(matches!(error, TransportError::HostKeyMismatch { .. }));
    }
}
