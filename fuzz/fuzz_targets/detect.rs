//! Protocol detection (proxy/src/datapath/detect.rs) on a client that sends
//! arbitrary bytes in arbitrary reads, then closes or goes silent.
//!
//! Input: one byte of options (bit 0: silent instead of closed; bits 1-7: the
//! read size, 1-128), then the client's bytes.
//!
//! Asserts: every byte the client sent is handed on, in order (detection replays
//! what it read); the decision does not depend on how the bytes were split into
//! reads; `Silent` only for a client that sent nothing; `Http2` only for bytes
//! that are, begin or are begun by the HTTP/2 preface.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_proxy::datapath::fuzzing::{Detection, detect_chunks};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&options, bytes)) = data.split_first() else {
        return;
    };
    let silent = options & 1 == 1;
    let read_size = usize::from(options >> 1) + 1;

    let chunks: Vec<&[u8]> = bytes.chunks(read_size).collect();
    let (split, replayed) = detect_chunks(&chunks, silent);
    assert_eq!(
        replayed, bytes,
        "detection lost or reordered bytes (read size {read_size})"
    );

    let (whole, replayed) = detect_chunks(&[bytes], silent);
    assert_eq!(replayed, bytes);
    assert_eq!(split, whole, "read size {read_size} changed the decision");

    assert_eq!(whole == Detection::Silent, bytes.is_empty());
    if whole == Detection::Http2 {
        let n = bytes.len().min(H2_PREFACE.len());
        assert_eq!(bytes[..n], H2_PREFACE[..n]);
    }
});
