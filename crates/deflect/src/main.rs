fn main() -> std::process::ExitCode {
    deflect::cli::main()
}
