//! The `gleitzeit` binary; everything lives in the library (`gleitzeit::cli`).

fn main() -> std::process::ExitCode {
    gleitzeit::cli::main()
}
