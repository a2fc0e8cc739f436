//! The connection state machine: connect (with the main thread's auth), run the link, back off and
//! try again for as long as the router runs; the watchdog arms after failed attempts and, when it
//! fires, asks the bridge to stop.

use super::{ConnState, Connector, Link, Shared};
use crate::backoff::Backoff;
use crate::shutdown::{Shutdown, StopReason};
use crate::watchdog::{Watchdog, WatchdogEvent};
use std::sync::Arc;
use tokio::time::Instant;

/// Sleeps until the watchdog fires, logging the countdown each whole minute; never returns while
/// the watchdog is not armed.
async fn watchdog_expiry(w: &mut Watchdog, url: &str) {
    loop {
        let Some(wake) = w.next_wake(Instant::now()) else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until(wake).await;
        if w.check_fire(Instant::now()) {
            return;
        }
        if let Some(left) = w.time_left(Instant::now()) {
            log::warn!(
                "watchdog: still no connection to {url}; saving and quitting in {} s",
                left.as_secs()
            );
        }
    }
}

/// The connection state machine. Returns when stopped or when the watchdog fired.
pub async fn run_manager<C: Connector>(connector: C, shared: Arc<Shared>, mut stop: Shutdown) {
    let url = shared.config.url.clone();
    let mut backoff = Backoff::new(shared.config.backoff);
    let mut watchdog = Watchdog::new(shared.config.watchdog);
    let mut attempt = 0u32;
    let fired = 'outer: loop {
        attempt += 1;
        shared.metrics.attempts.inc();
        shared.set_state(ConnState::Connecting { attempt });
        let outcome = tokio::select! {
            outcome = async {
                match shared.auth().await {
                    Ok(auth) => connector.connect(auth).await,
                    Err(e) => Err(e),
                }
            } => outcome,
            _ = stop.signalled() => break 'outer false,
            _ = watchdog_expiry(&mut watchdog, &url) => break 'outer true,
        };
        match outcome {
            Ok(link) => {
                log::info!("connected to {url} (namespace {})", shared.config.namespace);
                attempt = 0;
                backoff.reset();
                if watchdog.on_connected() == Some(WatchdogEvent::Disarmed) {
                    log::info!("watchdog disarmed: reconnected to {url}");
                }
                *shared.watchdog_fires_at.lock() = None;
                *shared.consecutive_failures.lock() = 0;
                shared.metrics.connects.inc();
                shared.set_state(ConnState::Connected { since: Instant::now() });
                let end = tokio::select! {
                    end = link.run(shared.clone()) => end,
                    _ = stop.signalled() => break 'outer false,
                };
                log::warn!("lost the connection to {url}: {end}; reconnecting");
                *shared.last_error.lock() = Some(end.to_string());
            }
            Err(e) => {
                log::warn!("connect attempt {attempt} to {url} failed: {e}");
                *shared.last_error.lock() = Some(e.to_string());
                if let Some(WatchdogEvent::Armed { left }) = watchdog.on_failure(Instant::now()) {
                    log::warn!(
                        "watchdog armed after {} failed attempts: saving the .blend file and quitting in {} s unless {url} comes back",
                        watchdog.consecutive_failures(),
                        left.as_secs()
                    );
                }
                *shared.watchdog_fires_at.lock() = watchdog.fires_at();
                *shared.consecutive_failures.lock() = watchdog.consecutive_failures();
            }
        }
        let delay = backoff.next_delay();
        shared.set_state(ConnState::Backoff {
            attempt,
            retry_at: Instant::now() + delay,
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.signalled() => break 'outer false,
            _ = watchdog_expiry(&mut watchdog, &url) => break 'outer true,
        }
    };
    if fired {
        log::error!("watchdog fired: no connection to {url}; saving the .blend file and closing Blender");
        shared.set_state(ConnState::GaveUp);
        *shared.watchdog_fires_at.lock() = None;
        shared.bridge.request_stop(StopReason::Watchdog);
    } else {
        shared.set_state(ConnState::Stopped);
    }
}
