//! Generates the ext_authz messages, client and server from proto/ (a subset of
//! Envoy's API with its field numbers; see proto/README.md). protoc and the
//! well-known types come from protoc-bin-vendored.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    println!("cargo:rerun-if-changed=proto");
    let include = protoc_bin_vendored::include_path()?;
    let include = include
        .to_str()
        .ok_or("protoc's include path is not UTF-8")?;
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/envoy/service/auth/v3/external_auth.proto"],
        &["proto", include],
    )?;
    Ok(())
}
