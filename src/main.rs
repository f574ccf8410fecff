//! The `lethe` binary: telemetry, then CLI dispatch.

fn main() -> std::process::ExitCode {
    lethe::cli::main()
}
