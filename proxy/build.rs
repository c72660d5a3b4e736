//! Generates the SPIFFE Workload API server from proto/workload.proto with a
//! vendored protoc (no protobuf-compiler needed on the machine).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(true)
        .compile_with_config(config, &["proto/workload.proto"], &["proto"])?;
    Ok(())
}
