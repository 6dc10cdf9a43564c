//! rewind-harness CLI (all logic in the library; see `cli`).
fn main() -> std::process::ExitCode {
    rewind_harness::cli::main()
}
