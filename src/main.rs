//! The `pgplatform` executable: everything lives in the library; see `cli::main`.

fn main() -> std::process::ExitCode {
    pgplatform::cli::main()
}
