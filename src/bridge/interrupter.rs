//! The interrupter: one std thread (started with the first job) that sleeps until the running
//! job's deadline, then sends the main thread a signal (`pthread_kill`, [`INTERRUPT_SIGNAL`]) every
//! [`REPEAT`] while that same job still runs; a cancel or a stop (`bridge::running`) wakes it at
//! once.
//!
//! The signal's Python handler raises `blendwire.errors.Interrupted` in the job: between bytecodes
//! for a busy loop, and out of `time.sleep` (which returns EINTR and runs handlers). The
//! interrupter never takes the GIL, so a job stuck in a long C call holding it cannot block it, and
//! it never touches an interpreter that is finalising.

use super::running::{round_ms, Cause, Inner};
use crate::error::fmt_secs;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often an interrupt is sent again while the same job still runs (code that catches
/// BaseException and carries on gets another one).
pub const REPEAT: Duration = Duration::from_millis(75);

/// SIGUSR2: neither Blender nor Python use it (Blender handles SIGSEGV/SIGABRT/SIGINT/SIGTERM,
/// the runtime SIGINT/SIGTERM).
pub const INTERRUPT_SIGNAL: i32 = libc::SIGUSR2;

pub(super) fn spawn(inner: Arc<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("blendwire-interrupt".into())
        .spawn(move || interrupter(&inner));
    if let Err(e) = spawned {
        log::error!("cannot start the interrupter thread ({e}): runaway jobs will not be interrupted");
    }
}

/// Sleep until the running job's deadline (or a stop), then interrupt it every [`REPEAT`] until
/// it ends. Never takes the GIL.
fn interrupter(inner: &Inner) {
    let mut st = inner.state.lock();
    loop {
        let Some(r) = st.running.as_mut() else {
            st.sleeping_until = None;
            inner.changed.wait(&mut st);
            continue;
        };
        let now = Instant::now();
        if r.cause.is_none() && now < r.deadline {
            let deadline = r.deadline;
            st.sleeping_until = Some(deadline);
            inner.changed.wait_until(&mut st, deadline);
            continue;
        }
        if r.cause.is_none() {
            r.cause = Some(Cause::Deadline);
            log::warn!(
                "{} ran past its deadline ({} s): interrupting it",
                r.command,
                fmt_secs(round_ms(r.deadline.saturating_duration_since(r.submitted)))
            );
        }
        r.interrupts_sent += 1;
        let signal = inner.signal.load(Relaxed);
        if signal != 0 {
            // SAFETY: the thread is the main thread, which lives as long as the process; a signal
            // with a Python handler installed only sets a flag there.
            unsafe { libc::pthread_kill(r.thread, signal) };
        }
        let id = r.id;
        let until = Instant::now() + REPEAT;
        st.sleeping_until = Some(until);
        // Wait out the repeat interval unless the job ends (a new job is looked at afresh).
        while st.running.as_ref().is_some_and(|r| r.id == id) {
            if inner.changed.wait_until(&mut st, until).timed_out() {
                break;
            }
        }
    }
}
