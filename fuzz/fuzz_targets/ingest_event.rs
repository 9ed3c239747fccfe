#![no_main]
//! See `weir_fuzz::ingest_event`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::ingest_event(data));
