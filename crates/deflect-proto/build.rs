// Compiles proto/ with protox (pure Rust; no protoc needed) and hands the descriptors to prost-build.
fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("deflect/v1/events.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root]).expect("compile proto/deflect/v1/events.proto");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("generate Rust from proto descriptors");
}
