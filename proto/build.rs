//! Generates the rewind.v1 client and server with tonic-prost-build.
//! protoc comes from protoc-bin-vendored unless PROTOC is set, so a fresh
//! machine needs no protobuf-compiler package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("rewind_v1_descriptor.bin"))
        .compile_protos(&["rewind/v1/checkpoint.proto"], &["."])?;
    println!("cargo:rerun-if-changed=rewind/v1/checkpoint.proto");
    Ok(())
}
