//! Generates the gRPC service from `proto/event.proto` (needs `protoc`,
//! installed by deploy/local/install.sh from Debian's protobuf-compiler).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .build_client(true)
        .compile_protos(&["proto/event.proto"], &["proto"])?;
    Ok(())
}
