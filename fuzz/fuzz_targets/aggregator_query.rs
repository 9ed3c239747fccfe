#![no_main]
//! See `weir_fuzz::aggregator_query`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::aggregator_query(data));
