#if canImport(Glibc)
    import Glibc
#endif

/// Bounds on glibc's allocator for a long `run`, so peak RSS stays flat whatever the file's size.
///
/// Measured on 1M housing rows (bench/results.md, notes): with glibc's defaults a 1M-row `run`
/// peaked at ~134 MiB, of which one thread arena alone held 54 MiB of freed memory. Two causes:
/// glibc raises its mmap threshold each time a large block (a 1 MiB fetch buffer, a COPY batch,
/// a decompressed lz4 batch) is freed, so later large blocks come from the arenas and stay
/// there; and each of the ~14 threads (librdkafka's, the writer, the producer) may get an arena
/// of its own. A fixed threshold of 128 KiB (large blocks are mapped and returned to the system
/// when freed) and at most 2 arenas brought the peak to ~104 MiB, at a few percent more CPU
/// (page faults of the mapped blocks).
public enum ProcessMemory {
    /// Applies the bounds. Call first thing in `main`, before threads start; a variable
    /// `MALLOC_ARENA_MAX` or `MALLOC_MMAP_THRESHOLD_` the user set wins over these values.
    public static func bound(environment: [String: String]) {
        #if canImport(Glibc)
            // <malloc.h> is not part of Swift's Glibc module: look mallopt up in the C library.
            typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
            guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
            let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
            let mmapThreshold: Int32 = -3
            let arenaMax: Int32 = -8  // M_MMAP_THRESHOLD, M_ARENA_MAX (malloc.h)
            if environment["MALLOC_MMAP_THRESHOLD_"] == nil { _ = mallopt(mmapThreshold, 128 * 1024) }
            if environment["MALLOC_ARENA_MAX"] == nil { _ = mallopt(arenaMax, 2) }
        #endif
    }
}
