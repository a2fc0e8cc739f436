#![no_main]
use libfuzzer_sys::fuzz_target;

// First bytes choose the read sizes; the rest is the stream.
fuzz_target!(|data: &[u8]| {
    let (head, body) = data.split_at(data.len().min(4));
    let chunks: Vec<usize> = head.iter().map(|b| *b as usize % 17 + 1).collect();
    blendwire::fuzzing::decoder_is_chunking_independent(body, &chunks);
    blendwire::fuzzing::encoder_matches_serde_json(body);
});
