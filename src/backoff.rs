//! Exponential backoff with jitter, for every retry loop (client reconnects, the router's).

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub factor: f64,
    /// ±fraction of each delay, drawn uniformly (0.5 = ±50%).
    pub jitter: f64,
}

impl BackoffPolicy {
    /// The router's reconnect policy unless settings say otherwise.
    pub const DEFAULT: BackoffPolicy = BackoffPolicy {
        initial: crate::defaults::DEFAULT_BACKOFF_INITIAL,
        max: crate::defaults::DEFAULT_BACKOFF_MAX,
        factor: crate::defaults::DEFAULT_BACKOFF_FACTOR,
        jitter: crate::defaults::DEFAULT_BACKOFF_JITTER,
    };
}

impl BackoffPolicy {
    /// Reconnects of a local client: fast first retry, never long.
    pub const CLIENT: BackoffPolicy = BackoffPolicy {
        initial: Duration::from_millis(50),
        max: Duration::from_secs(1),
        factor: 2.0,
        jitter: 0.5,
    };
}

#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff { policy, attempt: 0 }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The delay before the next attempt (without jitter), then counts the attempt.
    fn base_delay(&mut self) -> Duration {
        let p = &self.policy;
        let exp = p.factor.powi(self.attempt.min(64) as i32);
        self.attempt = self.attempt.saturating_add(1);
        let secs = (p.initial.as_secs_f64() * exp).min(p.max.as_secs_f64());
        Duration::from_secs_f64(secs)
    }

    /// The jittered delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base_delay().as_secs_f64();
        let j = self.policy.jitter.clamp(0.0, 1.0);
        let scale = 1.0 - j + 2.0 * j * fastrand::f64();
        Duration::from_secs_f64(base * scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap() {
        let mut b = Backoff::new(BackoffPolicy {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(10),
            factor: 2.0,
            jitter: 0.0,
        });
        let got: Vec<u64> = (0..6).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, vec![2, 4, 8, 10, 10, 10]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut b = Backoff::new(BackoffPolicy {
                jitter: 0.5,
                ..BackoffPolicy::CLIENT
            });
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(25) && d <= Duration::from_millis(75),
                "{d:?}"
            );
            seen.insert(d);
        }
        assert!(seen.len() > 10);
    }
}
