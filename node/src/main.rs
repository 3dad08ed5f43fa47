//! The `node` binary: see `sensornet::cli`.
fn main() -> std::process::ExitCode {
    sensornet::cli::main()
}
