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
    // Transparent huge pages off, unless the operator set mimalloc's own switch for them: the
    // allocator asks for huge pages on its arenas, and a 2 MiB page stays resident whole as long
    // as one small block in it is live. With many sessions the blocks freed after each fold of
    // the local store leave such pages behind, and a pod's memory limit counts them; the
    // scale benchmark's resident memory per session is the measure (docs/BENCHMARKS.md).
    // Throughput did not move with them off. A kernel that refuses the call keeps its setting:
    // only memory is at stake, not correctness.
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
    keepalive::cli::main()
}
