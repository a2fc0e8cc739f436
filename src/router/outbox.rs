//! The bounded outbox of replies not yet sent (the engine may be away).

use super::reply::Reply;
use std::collections::VecDeque;

/// Replies waiting to be sent, oldest first, bounded by count and bytes.
#[derive(Debug)]
pub struct Outbox {
    replies: VecDeque<(Reply, usize)>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
}

impl Outbox {
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        Outbox {
            replies: VecDeque::new(),
            bytes: 0,
            max_count: max_count.max(1),
            max_bytes,
        }
    }

    /// Queue a reply; returns the message ids dropped (oldest first) to stay within the bounds.
    pub fn push(&mut self, reply: Reply) -> Vec<String> {
        let size = reply.size();
        self.bytes += size;
        self.replies.push_back((reply, size));
        let mut dropped = vec![];
        while self.replies.len() > self.max_count || (self.bytes > self.max_bytes && self.replies.len() > 1) {
            if let Some((old, s)) = self.replies.pop_front() {
                self.bytes -= s;
                dropped.push(old.message_id);
            }
        }
        dropped
    }

    /// Put a reply that could not be sent back at the front.
    pub fn push_front(&mut self, reply: Reply) {
        let size = reply.size();
        self.bytes += size;
        self.replies.push_front((reply, size));
    }

    pub fn pop(&mut self) -> Option<Reply> {
        let (reply, size) = self.replies.pop_front()?;
        self.bytes -= size;
        Some(reply)
    }

    /// A reply to `message_id` waits here (not sent yet).
    pub fn holds(&self, message_id: &str) -> bool {
        self.replies.iter().any(|(r, _)| r.message_id == message_id)
    }

    pub fn len(&self) -> usize {
        self.replies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn outbox_keeps_order_and_drops_the_oldest() {
        let mut o = Outbox::new(2, 1 << 20);
        for id in ["a", "b", "c"] {
            let dropped = o.push(Reply::completed(id, &Value::Null, json!({})));
            if id == "c" {
                assert_eq!(dropped, vec!["a".to_string()]);
            }
        }
        assert_eq!(o.pop().unwrap().message_id, "b");
        let c = o.pop().unwrap();
        o.push_front(c);
        assert_eq!(o.pop().unwrap().message_id, "c");
        assert!(o.is_empty());
        o.push(Reply::completed("d", &Value::Null, json!({})));
        assert!(o.holds("d") && !o.holds("c"));
        let mut small = Outbox::new(100, 300);
        small.push(Reply::completed("x", &Value::Null, json!({"pad": "x".repeat(200)})));
        let dropped = small.push(Reply::completed("y", &Value::Null, json!({"pad": "y".repeat(200)})));
        assert_eq!(dropped, vec!["x".to_string()]);
    }
}
