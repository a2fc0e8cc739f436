//! The fuzz targets' properties on generated inputs (seeded, so every run is the same), plus
//! inputs the fuzzer once found (add them to `REGRESSIONS`).

use blendwire::fuzzing::{decoder_is_chunking_independent, encoder_matches_serde_json, engine_text_round_trips};

const REGRESSIONS: &[&[u8]] = &[b"{\"a\":\"\\\\\"}", b"[[[[", b"}{", b"\"{\"}", b"{\"\xe2\x82\"}"];

fn generated(seed: u64, n: usize) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let pieces: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b"\\",
        b":",
        b",",
        b" ",
        b"\n",
        b"1",
        b"-2.5e3",
        b"true",
        b"null",
        b"\"type\"",
        b"\"params\"",
        b"{\"type\":\"get_scene_info\",\"params\":{}}",
        "é🦀".as_bytes(),
        b"\xff",
    ];
    (0..n)
        .map(|_| {
            let len = rng.usize(0..40);
            (0..len)
                .flat_map(|_| pieces[rng.usize(..pieces.len())].to_vec())
                .collect()
        })
        .collect()
}

#[test]
fn decoding_does_not_depend_on_chunking() {
    let mut rng = fastrand::Rng::with_seed(7);
    for input in generated(1, 3000)
        .iter()
        .map(Vec::as_slice)
        .chain(REGRESSIONS.iter().copied())
    {
        let chunks: Vec<usize> = (0..4).map(|_| rng.usize(1..9)).collect();
        decoder_is_chunking_independent(input, &chunks);
        decoder_is_chunking_independent(input, &[1]);
    }
}

#[test]
fn responses_encode_exactly_as_serde_json() {
    for input in generated(2, 3000)
        .iter()
        .map(Vec::as_slice)
        .chain(REGRESSIONS.iter().copied())
    {
        encoder_matches_serde_json(input);
    }
}

#[test]
fn engine_packets_round_trip() {
    let cases = [
        r#"42/blender,["command_received",{"message_id":"m","addon_id":"a","command":"c","params":{"x":[1,{"y":null}]},"metadata":{"route":"agent"}}]"#,
        r#"42/blender,["command_received",{"message_id":7,"addon_id":"a"}]"#,
        r#"42/blender,["command_received"]"#,
        r#"42/blender,["command_received",{"message_id":"m","addon_id":"a","command":"c","params":"x"}]"#,
        "42/blender,[\"command_received\",{\"message_id\":\"\u{1F980}\",\"addon_id\":\"a\",\"command\":\"c\"}]",
        r#"4"#,
        r#"42/blender,12["command_received",{}]"#,
    ];
    for c in cases {
        engine_text_round_trips(c);
    }
    for input in generated(2, 2000) {
        if let Ok(text) = std::str::from_utf8(&input) {
            engine_text_round_trips(&format!("42/blender,[\"command_received\",{text}]"));
            engine_text_round_trips(text);
        }
    }
}
