// RocksDB and the per-event maps allocate heavily: mimalloc is faster than glibc's malloc here
// and returns memory instead of fragmenting it across thread arenas (`deflect bench-state`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    deflect::cli::main()
}
