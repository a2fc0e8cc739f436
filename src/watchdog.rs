//! The save-and-quit watchdog: armed after N failed connection attempts in a row, disarmed by any
//! successful connect, fires when its time runs out. Pure state: the caller passes the time in,
//! so the logic is testable with any clock (the router uses tokio's, paused in tests).

use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchdogPolicy {
    /// Consecutive failed attempts that arm it.
    pub arm_after_failures: u32,
    /// Time from arming to firing; `None` disables the watchdog.
    pub duration: Option<Duration>,
}

impl Default for WatchdogPolicy {
    fn default() -> Self {
        WatchdogPolicy {
            arm_after_failures: crate::defaults::DEFAULT_WATCHDOG_AFTER_FAILURES,
            duration: Some(crate::defaults::DEFAULT_WATCHDOG),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WatchdogState {
    Idle,
    Armed { fires_at: Instant },
    Fired,
}

/// What a state change means, for the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WatchdogEvent {
    Armed { left: Duration },
    Disarmed,
}

#[derive(Debug)]
pub struct Watchdog {
    policy: WatchdogPolicy,
    state: WatchdogState,
    failures: u32,
}

impl Watchdog {
    pub fn new(policy: WatchdogPolicy) -> Self {
        Watchdog {
            policy,
            state: WatchdogState::Idle,
            failures: 0,
        }
    }

    pub fn state(&self) -> WatchdogState {
        self.state
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    pub fn on_failure(&mut self, now: Instant) -> Option<WatchdogEvent> {
        self.failures = self.failures.saturating_add(1);
        match (self.state, self.policy.duration) {
            (WatchdogState::Idle, Some(d)) if self.failures >= self.policy.arm_after_failures => {
                self.state = WatchdogState::Armed { fires_at: now + d };
                Some(WatchdogEvent::Armed { left: d })
            }
            _ => None,
        }
    }

    pub fn on_connected(&mut self) -> Option<WatchdogEvent> {
        self.failures = 0;
        match self.state {
            WatchdogState::Armed { .. } => {
                self.state = WatchdogState::Idle;
                Some(WatchdogEvent::Disarmed)
            }
            _ => None,
        }
    }

    pub fn fires_at(&self) -> Option<Instant> {
        match self.state {
            WatchdogState::Armed { fires_at } => Some(fires_at),
            _ => None,
        }
    }

    pub fn time_left(&self, now: Instant) -> Option<Duration> {
        self.fires_at().map(|t| t.saturating_duration_since(now))
    }

    /// True (once) when the time has run out.
    pub fn check_fire(&mut self, now: Instant) -> bool {
        match self.state {
            WatchdogState::Armed { fires_at } if now >= fires_at => {
                self.state = WatchdogState::Fired;
                true
            }
            _ => false,
        }
    }

    /// When to wake next: at each whole minute left (to log the countdown), and at the deadline.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        let fires_at = self.fires_at()?;
        let left = fires_at.saturating_duration_since(now);
        let whole_minutes = left.as_secs().saturating_sub(1) / 60;
        Some(fires_at - Duration::from_secs(whole_minutes * 60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_after_five_failures_and_disarms_on_connect() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(WatchdogPolicy::default());
        for _ in 0..4 {
            assert_eq!(w.on_failure(t0), None);
        }
        assert_eq!(
            w.on_failure(t0),
            Some(WatchdogEvent::Armed {
                left: Duration::from_secs(300)
            })
        );
        assert_eq!(w.on_failure(t0), None, "arming happens once");
        assert_eq!(
            w.time_left(t0 + Duration::from_secs(100)),
            Some(Duration::from_secs(200))
        );
        assert!(!w.check_fire(t0 + Duration::from_secs(299)));
        assert_eq!(w.on_connected(), Some(WatchdogEvent::Disarmed));
        assert!(!w.check_fire(t0 + Duration::from_secs(1000)));
        assert_eq!(w.consecutive_failures(), 0);
    }

    #[test]
    fn fires_once_at_the_deadline() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(WatchdogPolicy {
            arm_after_failures: 1,
            duration: Some(Duration::from_secs(10)),
        });
        w.on_failure(t0);
        assert!(w.check_fire(t0 + Duration::from_secs(10)));
        assert!(!w.check_fire(t0 + Duration::from_secs(11)));
        assert_eq!(w.state(), WatchdogState::Fired);
    }

    #[test]
    fn disabled_never_arms() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(WatchdogPolicy {
            arm_after_failures: 1,
            duration: None,
        });
        for _ in 0..100 {
            assert_eq!(w.on_failure(t0), None);
        }
        assert_eq!(w.fires_at(), None);
    }

    #[test]
    fn wakes_at_each_whole_minute_left() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(WatchdogPolicy {
            arm_after_failures: 1,
            duration: Some(Duration::from_secs(300)),
        });
        w.on_failure(t0);
        let s = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(w.next_wake(t0), Some(s(60)));
        assert_eq!(w.next_wake(s(60)), Some(s(120)));
        assert_eq!(w.next_wake(s(250)), Some(s(300)));
    }
}
