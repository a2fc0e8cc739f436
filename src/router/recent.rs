//! The bounded memory of seen message ids: a command the engine repeats runs once and is answered
//! again.

use super::reply::Reply;
use std::collections::{HashMap, VecDeque};

/// What a command that came before is now, for a repeat of it (same command and message_id).
#[derive(Debug, Clone, PartialEq)]
pub enum Repeat {
    /// Not seen (or forgotten): run it. It is now remembered as running.
    First,
    /// Still running: its one answer is on the way.
    Running,
    /// It ran and was answered; the answer is kept while within the byte budget. The engine asks
    /// again when its node died before reading the first answer, so it gets it again (never a
    /// second run).
    Answered(Option<Reply>),
}

#[derive(Debug)]
enum Seen {
    Running,
    Answered(Option<Reply>),
}

/// The last `capacity` commands, so that a repeated one runs once and is answered again; the
/// answers themselves are kept only within `max_bytes` (the oldest forgotten first).
#[derive(Debug)]
pub struct Recent {
    order: VecDeque<String>,
    seen: HashMap<String, Seen>,
    capacity: usize,
    /// Keys whose answer is kept, oldest first, and those answers' bytes.
    kept: VecDeque<String>,
    kept_bytes: usize,
    max_bytes: usize,
}

impl Recent {
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Recent {
            order: VecDeque::new(),
            seen: HashMap::new(),
            capacity: capacity.max(1),
            kept: VecDeque::new(),
            kept_bytes: 0,
            max_bytes,
        }
    }

    /// What `key` is; a new key is remembered as running.
    pub fn begin(&mut self, key: &str) -> Repeat {
        match self.seen.get(key) {
            Some(Seen::Running) => return Repeat::Running,
            Some(Seen::Answered(reply)) => return Repeat::Answered(reply.clone()),
            None => {}
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                if let Some(Seen::Answered(Some(reply))) = self.seen.remove(&old) {
                    self.kept_bytes -= reply.size();
                    // Answers mostly come in order: the oldest command's is usually the oldest kept.
                    if self.kept.front() == Some(&old) {
                        self.kept.pop_front();
                    } else {
                        self.kept.retain(|k| *k != old);
                    }
                }
            }
        }
        self.order.push_back(key.to_string());
        self.seen.insert(key.to_string(), Seen::Running);
        Repeat::First
    }

    /// `key` was answered with `reply`.
    pub fn answered(&mut self, key: &str, reply: &Reply) {
        let Some(entry) = self.seen.get_mut(key) else { return };
        let size = reply.size();
        if size > self.max_bytes {
            *entry = Seen::Answered(None);
            return;
        }
        *entry = Seen::Answered(Some(reply.clone()));
        self.kept.push_back(key.to_string());
        self.kept_bytes += size;
        while self.kept_bytes > self.max_bytes {
            let Some(old) = self.kept.pop_front() else { break };
            if let Some(Seen::Answered(kept)) = self.seen.get_mut(&old) {
                if let Some(reply) = kept.take() {
                    self.kept_bytes -= reply.size();
                }
            }
        }
    }

    /// `key` never ran (the queue was full, its deadline passed first): a repeat may run it.
    pub fn forget(&mut self, key: &str) {
        if self.seen.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn recent_commands_run_once_and_are_answered_again() {
        let mut r = Recent::new(2, 1 << 20);
        assert_eq!(r.begin("a"), Repeat::First);
        assert_eq!(r.begin("a"), Repeat::Running);
        let reply = Reply::completed("a", &Value::Null, json!({"x": 1}));
        r.answered("a", &reply);
        assert_eq!(r.begin("a"), Repeat::Answered(Some(reply)));
        assert_eq!(r.begin("b"), Repeat::First);
        assert_eq!(r.begin("c"), Repeat::First); // forgets "a"
        assert_eq!(r.begin("a"), Repeat::First);
        r.forget("a"); // it never ran: a repeat runs it
        assert_eq!(r.begin("a"), Repeat::First);
    }

    #[test]
    fn recent_answers_are_kept_within_their_bytes() {
        let big = |id: &str| Reply::completed(id, &Value::Null, json!({"pad": "x".repeat(200)}));
        let mut r = Recent::new(10, 600);
        let b = big("b");
        assert!(b.size() > 300 && b.size() < 600, "{}", b.size());
        assert_eq!(r.begin("a"), Repeat::First);
        r.answered("a", &big("a"));
        assert_eq!(r.begin("b"), Repeat::First);
        r.answered("b", &b);
        // "a"'s answer made room for "b"'s: "a" is still answered (never run again), without its body.
        assert_eq!(r.begin("a"), Repeat::Answered(None));
        assert_eq!(r.begin("b"), Repeat::Answered(Some(b.clone())));
        assert_eq!(r.begin("c"), Repeat::First);
        let huge = Reply::completed("c", &Value::Null, json!({"pad": "x".repeat(700)}));
        r.answered("c", &huge);
        assert_eq!(r.begin("c"), Repeat::Answered(None));
        assert_eq!(r.kept_bytes, b.size());
    }
}
