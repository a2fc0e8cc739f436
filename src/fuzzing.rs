//! Properties checked by the fuzz targets (fuzz/) and, on generated inputs, by `cargo test`
//! (rust_tests/properties.rs), so that every run exercises them and crashes found by the fuzzer
//! can be kept as plain regression tests.
//!
//! Only built with the `fuzzing` feature, which fuzz/ and the tests turn on: not part of the wheel.

use crate::router::commands::parse_command;
use crate::router::reply::Reply;
use crate::socketio::{self, Packet};
use crate::wire::framing::{Decoder, Limits};

fn frames_of(input: &[u8], chunks: &[usize], limits: Limits) -> Vec<String> {
    let mut d = Decoder::new(limits);
    let mut out = vec![];
    let mut rest = input;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        d.extend(&rest[..n]);
        rest = &rest[n..];
        while let Some(f) = d.next_frame() {
            out.push(format!("{f:?}"));
        }
    }
    out
}

/// Decoding must not depend on how the bytes were cut into reads.
pub fn decoder_is_chunking_independent(input: &[u8], chunks: &[usize]) {
    let limits = Limits {
        max_frame_bytes: 4096,
        max_depth: 32,
    };
    let whole = frames_of(input, &[input.len().max(1)], limits);
    let chunked = frames_of(input, if chunks.is_empty() { &[1] } else { chunks }, limits);
    assert_eq!(whole, chunked, "chunking changed the decoded frames");
}

/// Every value decoded from the stream encodes to exactly serde_json's bytes, of the announced
/// length (the service's response encoder, `encode.rs`).
pub fn encoder_matches_serde_json(input: &[u8]) {
    let mut d = Decoder::new(Limits {
        max_frame_bytes: 1 << 20,
        max_depth: 64,
    });
    d.extend(input);
    while let Some(frame) = d.next_frame() {
        let Ok(value) = frame else { continue };
        let mut ours = Vec::new();
        crate::wire::encode::write_value(&mut ours, &value);
        let theirs = serde_json::to_vec(&value).unwrap_or_default();
        assert_eq!(ours, theirs, "encoding differs from serde_json for {value:?}");
        assert_eq!(ours.len(), crate::wire::encode::encoded_len(&value));
    }
}

/// Any text from the engine either fails to decode or, for a command, yields a reply that
/// encodes and decodes back to itself.
pub fn engine_text_round_trips(text: &str) {
    let Ok(Packet::Event { args, name, .. }) = socketio::decode(text) else {
        return;
    };
    if name != "command_received" {
        return;
    }
    let reply = match parse_command(args.into_iter().next().unwrap_or_default()) {
        Ok(cmd) => Reply::completed(&cmd.message_id, &cmd.route, serde_json::Value::Object(cmd.params)),
        Err(bad) => match bad.message_id {
            Some(id) => Reply::failed(&id, &bad.route, "INVALID_COMMAND", &bad.message),
            None => return,
        },
    };
    let wire = socketio::encode_event("/blender", reply.event, &reply.body);
    match socketio::decode(&wire) {
        Ok(Packet::Event { args, .. }) => assert_eq!(args, vec![reply.body], "reply did not round-trip"),
        other => panic!("our own reply did not decode: {other:?}"),
    }
}
