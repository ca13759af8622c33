//! The `keepalive` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

/// mimalloc rather than the system allocator: with Redis, each keepalive allocates and frees a
/// few dozen small blocks across threads (the request, the Redis connection's reader), and
/// glibc's malloc spent a fifth of the server's CPU on them (`perf`); mimalloc raised
/// keepalive's throughput by about 7 % in the benchmark (docs/BENCHMARKS.md). The library
/// leaves the choice to the applications that embed it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    keepalive::cli::main()
}
