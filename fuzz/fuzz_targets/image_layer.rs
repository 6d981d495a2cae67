//! Layer unpacking: the input is a layer blob (tar, gzip or zstd).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    corral_image::fuzzing::layer_bytes(data);
});
