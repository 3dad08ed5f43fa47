//! The `sensornet` binary: the same program as `node`, for hosts where Node.js owns `node`.
fn main() -> std::process::ExitCode {
    sensornet::cli::main()
}
