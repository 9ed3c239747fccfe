#![no_main]
//! See `weir_fuzz::processor_avro`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::processor_avro(data));
