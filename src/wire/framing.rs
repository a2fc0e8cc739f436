//! Unframed JSON stream → one JSON value per request.
//!
//! The BLD Remote protocol has no framing: a request is a JSON object, the next one may follow in
//! the same read, and one may be split anywhere (also inside a UTF-8 character). The decoder
//! scans bytes once (tracking strings, escapes and nesting, so it is O(n) however the input is
//! chunked), cuts a frame when its outermost bracket closes, and only then parses it. UTF-8 is
//! validated on the whole frame, so a split character is never a problem: the scanner only looks
//! at ASCII bytes, which never occur inside a multi-byte character.

use crate::error::RequestError;
use serde_json::Value;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request (bytes) before the connection is cut.
    pub max_frame_bytes: usize,
    /// Deepest nesting; below serde_json's own recursion limit (128).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: crate::defaults::DEFAULT_MAX_REQUEST_BYTES,
            max_depth: 100,
        }
    }
}

impl RequestError {
    /// After these the stream position is lost: answer, then close the connection.
    pub fn is_fatal(&self) -> bool {
        matches!(self, RequestError::TooLarge { .. } | RequestError::TooDeep { .. })
    }
}

#[derive(Debug, Default, Clone, Copy)]
enum Scan {
    /// Between frames: skipping white space.
    #[default]
    Idle,
    /// Inside a frame that started at `Decoder::start`.
    InFrame {
        depth: usize,
        in_string: bool,
        escaped: bool,
    },
    /// Skipping input that cannot start a request, up to the next `{` (reported once).
    Junk,
}

#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of unconsumed input in `buf`.
    start: usize,
    /// Next byte to scan.
    pos: usize,
    scan: Scan,
    limits: Limits,
    /// Set after a fatal error: nothing more is decoded.
    broken: bool,
    /// Size in bytes of the frame `next_frame` returned last.
    last_len: usize,
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Decoder {
            buf: Vec::new(),
            start: 0,
            pos: 0,
            scan: Scan::Idle,
            limits,
            broken: false,
            last_len: 0,
        }
    }

    /// Bytes received and not yet returned as (or skipped before) a frame.
    pub fn unconsumed(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The first byte after the last frame that is not white space, if it has arrived (between
    /// frames only: what follows a request tells its framing apart).
    pub fn next_byte(&self) -> Option<u8> {
        if self.mid_frame() {
            return None;
        }
        self.unconsumed().iter().copied().find(|b| !b.is_ascii_whitespace())
    }

    /// Size in bytes of the frame returned last.
    pub fn last_frame_len(&self) -> usize {
        self.last_len
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        if self.broken {
            return;
        }
        // Reclaim consumed space before growing, so a long-lived connection does not creep.
        if self.start > 0 && (self.start == self.buf.len() || self.start >= self.buf.len() / 2) {
            self.buf.drain(..self.start);
            self.pos -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// True while part of a request has arrived but not its end.
    pub fn mid_frame(&self) -> bool {
        matches!(self.scan, Scan::InFrame { .. })
    }

    /// The next complete request, if one has arrived. `Some(Err(e))` with `e.is_fatal()` ends
    /// the stream.
    pub fn next_frame(&mut self) -> Option<Result<Value, RequestError>> {
        if self.broken {
            return None;
        }
        loop {
            match self.scan {
                Scan::Idle => {
                    while self.pos < self.buf.len() && self.buf[self.pos].is_ascii_whitespace() {
                        self.pos += 1;
                    }
                    self.start = self.pos;
                    match self.buf.get(self.pos) {
                        None => return None,
                        Some(b'{') | Some(b'[') => {
                            self.scan = Scan::InFrame {
                                depth: 0,
                                in_string: false,
                                escaped: false,
                            };
                        }
                        Some(_) => return Some(Err(self.skip_junk())),
                    }
                }
                Scan::Junk => match self.buf[self.pos..].iter().position(|&b| b == b'{') {
                    Some(i) => {
                        self.pos += i;
                        self.scan = Scan::Idle;
                    }
                    None => {
                        self.pos = self.buf.len();
                        self.start = self.pos;
                        return None;
                    }
                },
                Scan::InFrame {
                    mut depth,
                    mut in_string,
                    mut escaped,
                } => {
                    let bytes = &self.buf[..];
                    let mut i = self.pos;
                    let mut closed = false;
                    while i < bytes.len() {
                        let b = bytes[i];
                        i += 1;
                        if in_string {
                            if escaped {
                                escaped = false;
                            } else if b == b'\\' {
                                escaped = true;
                            } else if b == b'"' {
                                in_string = false;
                            }
                            continue;
                        }
                        match b {
                            b'"' => in_string = true,
                            b'{' | b'[' => {
                                depth += 1;
                                if depth > self.limits.max_depth {
                                    return Some(Err(self.fail(RequestError::TooDeep {
                                        limit: self.limits.max_depth,
                                    })));
                                }
                            }
                            b'}' | b']' => {
                                depth -= 1;
                                if depth == 0 {
                                    closed = true;
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                    self.pos = i;
                    if !closed {
                        self.scan = Scan::InFrame {
                            depth,
                            in_string,
                            escaped,
                        };
                        if self.pos - self.start > self.limits.max_frame_bytes {
                            let limit = self.limits.max_frame_bytes;
                            return Some(Err(self.fail(RequestError::TooLarge { limit })));
                        }
                        return None;
                    }
                    let frame = &self.buf[self.start..self.pos];
                    let parsed = if frame.len() > self.limits.max_frame_bytes {
                        Err(self.fail(RequestError::TooLarge {
                            limit: self.limits.max_frame_bytes,
                        }))
                    } else {
                        serde_json::from_slice::<Value>(frame).map_err(|e| RequestError::InvalidJson(e.to_string()))
                    };
                    self.last_len = self.pos - self.start;
                    self.start = self.pos;
                    self.scan = Scan::Idle;
                    return Some(parsed);
                }
            }
        }
    }

    /// Input that cannot start a JSON object: report it once, then drop it up to the next `{`
    /// (however many reads that takes, so the errors do not depend on how the input was cut).
    fn skip_junk(&mut self) -> RequestError {
        let what = describe_junk(&self.buf[self.pos..]);
        self.scan = Scan::Junk;
        RequestError::NotAnObject(what)
    }

    fn fail(&mut self, e: RequestError) -> RequestError {
        self.broken = true;
        self.buf = Vec::new();
        self.start = 0;
        self.pos = 0;
        e
    }
}

/// Judged by the first byte only: the rest may not have arrived yet.
fn describe_junk(junk: &[u8]) -> &'static str {
    match junk.first() {
        Some(b'"') => "a string",
        Some(b'-' | b'0'..=b'9') => "a number",
        Some(b't' | b'f' | b'n') => "a bare literal (true, false or null)",
        Some(b'}' | b']') => "a stray closing bracket",
        _ => "bytes that are not JSON",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frames(d: &mut Decoder) -> Vec<Result<Value, RequestError>> {
        std::iter::from_fn(|| d.next_frame()).collect()
    }

    #[test]
    fn two_requests_in_one_read() {
        let mut d = Decoder::new(Limits::default());
        d.extend(br#"{"type":"a"}  {"type":"b","params":{"s":"}{"}}"#);
        let got = frames(&mut d);
        assert_eq!(
            got,
            vec![Ok(json!({"type":"a"})), Ok(json!({"type":"b","params":{"s":"}{"}}))]
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn byte_by_byte_with_split_utf8_and_escapes() {
        let text = r#"{"code":"print('é ☃ 🦀 \"}\\')"}"#;
        let mut d = Decoder::new(Limits::default());
        let mut got = vec![];
        for b in text.as_bytes() {
            d.extend(std::slice::from_ref(b));
            got.extend(frames(&mut d));
        }
        let want: Value = serde_json::from_str(text).unwrap();
        assert_eq!(got, vec![Ok(want)]);
    }

    #[test]
    fn non_objects_and_malformed_json_are_reported_and_skipped() {
        let mut d = Decoder::new(Limits::default());
        d.extend(b"42 {\"a\": } [1,2] {\"ok\":1}");
        let got = frames(&mut d);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], Err(RequestError::NotAnObject("a number")));
        assert!(matches!(got[1], Err(RequestError::InvalidJson(_))));
        assert_eq!(got[2], Ok(json!([1, 2])));
        assert_eq!(got[3], Ok(json!({"ok":1})));
    }

    #[test]
    fn invalid_utf8_is_malformed_not_a_panic() {
        let mut d = Decoder::new(Limits::default());
        d.extend(b"{\"a\":\"\xff\xfe\"}");
        assert!(matches!(d.next_frame(), Some(Err(RequestError::InvalidJson(_)))));
    }

    #[test]
    fn size_limit_cuts_an_unterminated_request() {
        let mut d = Decoder::new(Limits {
            max_frame_bytes: 1000,
            max_depth: 100,
        });
        d.extend(b"{\"code\":\"");
        for _ in 0..20 {
            d.extend(&[b'x'; 100]);
            if let Some(r) = d.next_frame() {
                assert_eq!(r, Err(RequestError::TooLarge { limit: 1000 }));
                assert!(d.next_frame().is_none());
                assert_eq!(d.buffered(), 0);
                return;
            }
        }
        panic!("size limit never triggered");
    }

    #[test]
    fn depth_limit() {
        let mut d = Decoder::new(Limits {
            max_frame_bytes: 1 << 20,
            max_depth: 10,
        });
        d.extend(&[b'['; 11]);
        assert_eq!(d.next_frame(), Some(Err(RequestError::TooDeep { limit: 10 })));
        assert!(d.next_frame().is_none());
    }

    #[test]
    fn the_byte_after_a_frame_tells_the_framing() {
        let mut d = Decoder::new(Limits::default());
        d.extend(b"{\"type\":\"execute\"}");
        assert!(matches!(d.next_frame(), Some(Ok(_))));
        assert_eq!((d.next_byte(), d.last_frame_len()), (None, 18));
        d.extend(b" \0junk");
        assert_eq!(d.next_byte(), Some(0));
        let mut d = Decoder::new(Limits::default());
        d.extend(b"{\"a\":1}{");
        assert!(matches!(d.next_frame(), Some(Ok(_))));
        assert_eq!(d.next_byte(), Some(b'{'));
    }

    #[test]
    fn consumed_space_is_reclaimed() {
        let mut d = Decoder::new(Limits::default());
        for _ in 0..10_000 {
            d.extend(br#"{"type":"get_scene_info"}"#);
            assert!(matches!(d.next_frame(), Some(Ok(_))));
        }
        assert!(d.buf.capacity() < 4096, "buffer grew to {}", d.buf.capacity());
    }
}
