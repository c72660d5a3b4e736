//! Generates the gRPC code from proto/. protoc comes from the protoc-bin-vendored
//! crate, so a fresh machine builds without installing protobuf-compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/agent.proto", "proto/admin.proto"],
        &["proto"],
    )?;
    Ok(())
}
