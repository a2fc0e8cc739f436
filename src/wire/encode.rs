//! Responses to bytes: the same compact JSON as `serde_json::to_writer`, written into a buffer
//! reserved to the exact size first.
//!
//! For large answers (a 10 MB `execute_code` stdout, sent twice as BLD Remote MCP does) serde_json's
//! byte-at-a-time escaping and the buffer doubling (copies plus page faults on fresh memory) were
//! most of the I/O thread's time. Here strings are scanned eight bytes at a time and the buffer is
//! allocated once.

use serde_json::Value;

/// Append `v` as compact JSON to `out`, byte-for-byte what `serde_json::to_writer` writes.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    out.reserve(encoded_len(v));
    write(out, v);
}

/// `write_value` for a caller that has reserved `encoded_len(v)` itself (sizing it once).
pub fn write(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            // Numbers are short: serde_json's own formatting (itoa/ryu) keeps them identical.
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write(out, item);
            }
            out.push(b'}');
        }
    }
}

/// The exact number of bytes `write` produces for `v`.
pub fn encoded_len(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => number_len(n),
        Value::String(s) => str_len(s),
        Value::Array(items) => 2 + items.len().saturating_sub(1) + items.iter().map(encoded_len).sum::<usize>(),
        Value::Object(map) => {
            2 + map.len().saturating_sub(1) + map.iter().map(|(k, v)| str_len(k) + 1 + encoded_len(v)).sum::<usize>()
        }
    }
}

fn number_len(n: &serde_json::Number) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, n);
    c.0
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Whether any of the 8 bytes in `x` is `"`, `\` or a control character (< 0x20).
#[inline]
fn needs_escape(x: u64) -> bool {
    let has_zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let quote = has_zero(x ^ (LO * b'"' as u64));
    let backslash = has_zero(x ^ (LO * b'\\' as u64));
    let control = x.wrapping_sub(LO * 0x20) & !x & HI;
    (quote | backslash | control) != 0
}

/// What serde_json writes for byte `b` inside a string, if it is escaped.
#[inline]
fn escape(b: u8) -> Option<&'static [u8]> {
    Some(match b {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x08 => b"\\b",
        0x0c => b"\\f",
        0x00..=0x1f => return Some(&CONTROL[b as usize]),
        _ => return None,
    })
}

/// `\u00XX` for every control byte.
static CONTROL: [[u8; 6]; 32] = {
    let hex = b"0123456789abcdef";
    let mut t = [[0u8; 6]; 32];
    let mut i = 0;
    while i < 32 {
        t[i] = [b'\\', b'u', b'0', b'0', hex[i >> 4], hex[i & 15]];
        i += 1;
    }
    t
};

/// Calls `emit(run, escaped)` for each stretch of bytes that need no escaping, each followed by
/// the byte that does (None after the last stretch).
#[inline]
fn scan(s: &[u8], mut emit: impl FnMut(&[u8], Option<u8>)) {
    let (mut start, mut i) = (0, 0);
    while i < s.len() {
        if i + 8 <= s.len() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&s[i..i + 8]);
            if !needs_escape(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let end = (i + 8).min(s.len());
        while i < end {
            if escape(s[i]).is_some() {
                emit(&s[start..i], Some(s[i]));
                start = i + 1;
            }
            i += 1;
        }
    }
    emit(&s[start..], None);
}

/// Append `s` as a JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    scan(s.as_bytes(), |run, escaped| {
        out.extend_from_slice(run);
        if let Some(e) = escaped.and_then(escape) {
            out.extend_from_slice(e);
        }
    });
    out.push(b'"');
}

/// The exact number of bytes `write_str` produces for `s`.
pub fn str_len(s: &str) -> usize {
    let mut n = 2;
    scan(s.as_bytes(), |run, escaped| {
        n += run.len() + escaped.and_then(escape).map_or(0, <[u8]>::len)
    });
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn same_as_serde(v: &Value) {
        let mut out = Vec::new();
        write_value(&mut out, v);
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&serde_json::to_vec(v).unwrap())
        );
        assert_eq!(out.len(), encoded_len(v));
    }

    #[test]
    fn matches_serde_json_on_every_kind_of_value() {
        same_as_serde(&json!(null));
        same_as_serde(
            &json!({"status": "success", "result": {"a": [1, -2, 3.5, 1e300, -0.0, 18446744073709551615u64,
            true, false, null, "", {}, []]}}),
        );
        let every_byte: String = (0u8..128).map(char::from).collect();
        same_as_serde(&json!({ every_byte.clone(): every_byte.repeat(3) }));
        same_as_serde(&json!([
            "é🦀\u{7f}\u{2028}/<>",
            "x".repeat(1000) + "\"" + &"y".repeat(7)
        ]));
        for n in 0..20 {
            same_as_serde(&json!("\n".repeat(n) + &"z".repeat(n)));
        }
    }

    #[test]
    fn matches_serde_json_on_generated_strings() {
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet: Vec<char> = "ab\"\\\n\t\u{1}\u{1f} é🦀\u{7f}".chars().collect();
        for _ in 0..2000 {
            let s: String = (0..rng.usize(0..40))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            same_as_serde(&json!({ s.clone(): [s, 1.25] }));
        }
    }
}
