#![no_main]
//! See `weir_fuzz::ingest_body`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::ingest_body(data));
