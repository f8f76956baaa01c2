// Compiles proto/ with protox (pure Rust; no protoc needed) and hands the descriptors to prost-build.
fn main() {
    // read at run time: a build script binary may be reused from another checkout of the workspace
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = std::path::Path::new(&manifest).join("../../proto");
    let files = [
        root.join("deflect/v1/events.proto"),
        root.join("deflect/v1/reports.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root]).expect("compile proto/deflect/v1/*.proto");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("generate Rust from proto descriptors");
}
