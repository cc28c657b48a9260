//! The `gleitzeit` binary; everything lives in the library (`gleitzeit::cli`).

/// mimalloc: the engine and the parser allocate many small objects; glibc's
/// allocator spent half of validation time in malloc/free (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    gleitzeit::cli::main()
}
