//! The `pollen` binary: parses arguments and runs the chosen role or command.

fn main() -> std::process::ExitCode {
    pollen::cli::main()
}
