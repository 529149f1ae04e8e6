// When our elementwise and attention kernels go parallel.
#pragma once
#include <cstdint>

namespace bd {

// Below about this many floats of work, starting and joining a parallel region (microseconds,
// much more when cores are shared) costs more than splitting the work saves.
inline constexpr int64_t kMinParallelWork = int64_t(1) << 15;

// Below this many weight elements a matrix product (dense or packed-sign GEMV) or the widening of
// a block of rows is done by one thread: waking the pool would cost about as much as the work.
inline constexpr int64_t kMinParallelElements = int64_t(1) << 16;

}  // namespace bd
