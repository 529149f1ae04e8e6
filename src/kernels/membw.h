// Measured read bandwidth of main memory: the ceiling for memory-bound kernels such as decode.
#pragma once
#include <cstddef>

namespace bd {

// Bytes per second that all threads of the current pool together read from memory, best of
// `repeats` passes of a streaming sum over a buffer of `bytes` (make it much larger than the
// last-level cache so that every pass comes from DRAM).
double measure_read_bandwidth(size_t bytes = size_t(1) << 30, int repeats = 5);

}  // namespace bd
