//! Waiting for a job's answer past its deadline, the one rule for every caller (the service's
//! pipeline, the router): at the deadline a job still queued is answered `timeout` (it will not
//! run); one that runs is interrupted there (`bridge::interrupter`) and its own answer, normally
//! `interrupted`, is waited for up to [`INTERRUPT_GRACE`] more before the caller is told it still
//! runs. An answer sent just as the deadline passed wins over `timeout`.
//!
//! Callers wait with their own means (a connection also watches its client and sends progress),
//! so the rule is a small state machine: wait until [`AnswerWait::until`]; when that passes with no
//! answer, [`AnswerWait::timed_out`] says what comes next.

use super::running::MainThread;
use super::JobResult;
use crate::defaults::INTERRUPT_GRACE;
use crate::error::JobError;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Where a wait for job `id`'s answer stands.
#[derive(Debug)]
pub struct AnswerWait {
    id: u64,
    until: Instant,
    in_grace: bool,
}

/// What follows a wait that ended with no answer.
#[derive(Debug)]
pub enum Next {
    /// The job runs and was interrupted: wait this much longer for its answer
    /// ([`AnswerWait::until`] moved by as much).
    Grace(Duration),
    /// It answered just as the deadline passed.
    Answer(JobResult),
    /// No answer is coming in time; [`Missed::error`] is the caller's answer.
    Missed(Missed),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// Still queued at its deadline: it will not run.
    Timeout,
    /// Still running at the end of the grace after its deadline.
    StillRunning,
}

impl Missed {
    /// The job error for `command`, whose caller waited `after`.
    pub fn error(self, command: String, after: Duration) -> JobError {
        match self {
            Missed::Timeout => JobError::Timeout { command, after },
            Missed::StillRunning => JobError::StillRunning {
                command,
                after,
                grace: INTERRUPT_GRACE,
            },
        }
    }
}

impl AnswerWait {
    pub fn new(id: u64, deadline: Instant) -> Self {
        AnswerWait {
            id,
            until: deadline,
            in_grace: false,
        }
    }

    /// Wait for the answer until this instant.
    pub fn until(&self) -> Instant {
        self.until
    }

    /// [`until`](Self::until) passed with no answer on `rx`.
    pub fn timed_out(&mut self, main: &MainThread, rx: &mut oneshot::Receiver<JobResult>) -> Next {
        if self.in_grace {
            return Next::Missed(Missed::StillRunning);
        }
        if main.is_running(self.id) {
            self.in_grace = true;
            self.until += INTERRUPT_GRACE;
            return Next::Grace(INTERRUPT_GRACE);
        }
        // It may have ended just now (a job is marked ended after its answer is sent).
        match rx.try_recv() {
            Ok(result) => Next::Answer(result),
            Err(_) => Next::Missed(Missed::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::Origin;
    use serde_json::json;

    #[test]
    fn a_job_not_running_at_its_deadline_times_out_unless_it_just_answered() {
        let main = MainThread::default();
        let (tx, mut rx) = oneshot::channel::<JobResult>();
        let deadline = Instant::now();
        let mut wait = AnswerWait::new(7, deadline);
        assert_eq!(wait.until(), deadline);
        assert!(matches!(wait.timed_out(&main, &mut rx), Next::Missed(Missed::Timeout)));
        tx.send(Ok(json!(1))).unwrap();
        let mut wait = AnswerWait::new(7, deadline);
        assert!(matches!(wait.timed_out(&main, &mut rx), Next::Answer(Ok(v)) if v == json!(1)));
    }

    #[test]
    fn a_running_job_gets_the_grace_then_still_runs() {
        let main = MainThread::default();
        let (_tx, mut rx) = oneshot::channel::<JobResult>();
        let now = Instant::now();
        main.begin(
            7,
            "execute_code".into(),
            Origin::default(),
            now,
            now + Duration::from_secs(60),
        );
        let mut wait = AnswerWait::new(7, now);
        assert!(matches!(wait.timed_out(&main, &mut rx), Next::Grace(g) if g == INTERRUPT_GRACE));
        assert_eq!(wait.until(), now + INTERRUPT_GRACE);
        let Next::Missed(missed) = wait.timed_out(&main, &mut rx) else {
            panic!("the grace is given once");
        };
        let e = missed.error("execute_code".into(), Duration::from_secs(1));
        assert!(matches!(e, JobError::StillRunning { grace, .. } if grace == INTERRUPT_GRACE));
        main.end();
    }
}
