#if canImport(Glibc)
    // `stdout` is a C global; it is set up once in `main`, before any thread starts. This file
    // imports Glibc alone: with Foundation's import beside it, the variable is not preconcurrency.
    @preconcurrency import Glibc
#endif

/// Makes standard output line-buffered, so progress lines show as they happen also in a file or
/// a pipe. Call once, first thing in `main`.
func lineBufferStandardOutput() {
    setvbuf(stdout, nil, _IOLBF, 0)
}
