// Process-wide glibc malloc settings for the migration data plane.
//
// Why (PERF.md, "Round-0 throughput"): gRPC allocates a fresh buffer for
// every TCP read (1-4 MiB chunks) and for every serialized message. With
// glibc's defaults those come from per-thread arenas whose 64 MiB heaps are
// unmapped / MADV_DONTNEED'd again as soon as they empty, or from mmap()
// (above the dynamic mmap threshold), so nearly every byte received is
// recv()'d into memory that was never touched: one page fault per 4 KiB.
// A fault costs 5-8 us on this host (PVM), which capped a raw gRPC stream at
// ~250 MB/s (perf: 60% of cycles in _copy_to_iter -> exc_page_fault; ~0.9
// faults per received page). With one arena that is never trimmed below
// 256 MiB and no mmap() for blocks under 32 MiB, freed buffers are reused
// while still populated: ~16x fewer faults, raw gRPC ~1-1.8 GB/s.
//
// TuneMallocForDataPlane() runs automatically (a static initializer in this
// target, alwayslink) so that M_ARENA_MAX takes effect before the process
// starts its second thread -- glibc fixes the arena limit at the first
// secondary arena. Calling it again is harmless; called after threads
// exist, only the trim / mmap thresholds still take effect. Set
// FERRY_MALLOC_TUNING=0 in the environment to keep glibc's defaults (or
// tune with GLIBC_TUNABLES instead).
#ifndef FERRY_AGENT_MIGRATION_DESTINATION_MALLOC_TUNING_H_
#define FERRY_AGENT_MIGRATION_DESTINATION_MALLOC_TUNING_H_

namespace ferry::migration {

// True if the settings were applied (now or before).
bool TuneMallocForDataPlane();

}  // namespace ferry::migration

#endif  // FERRY_AGENT_MIGRATION_DESTINATION_MALLOC_TUNING_H_
