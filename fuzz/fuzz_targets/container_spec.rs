//! CreateContainer's spec building: the input is a protobuf `ContainerConfig`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    corral_oci::fuzzing::container_config_bytes(data);
});
