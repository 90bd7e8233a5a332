//! Fuzz the request-head sniffer on pipelined streams: whatever the bytes and
//! however they are split into reads, the incremental scanner must judge the
//! stream (heads seen, first head refused) exactly like the whole-stream
//! reference in `src/sniff/reference.rs`, which this target includes.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run head_sniffer -- -dict=fuzz/head_sniffer.dict`
//! from `crates/palisade-proxy`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_proxy::sniff::HeadScanner;

#[path = "../../src/sniff/reference.rs"]
mod reference;

fuzz_target!(|data: &[u8]| {
    // The first byte says how many cut points follow (0-7), one byte each (a
    // fraction of the stream's length); the rest is the stream.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (cut_bytes, stream) = rest.split_at(usize::from(n % 8).min(rest.len()));
    let mut cuts: Vec<usize> = cut_bytes
        .iter()
        .map(|&c| usize::from(c) * stream.len() / 255)
        .collect();
    cuts.sort_unstable();
    cuts.push(stream.len());
    let mut scanner = HeadScanner::default();
    let mut from = 0;
    for cut in cuts {
        scanner.feed(&stream[from..cut]);
        from = cut;
    }
    assert_eq!(
        (scanner.heads(), scanner.first_bad()),
        reference::judge(stream),
        "{}",
        stream.escape_ascii()
    );
});
