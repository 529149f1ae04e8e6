// When our elementwise and attention kernels go parallel.
#pragma once
#include <cstdint>

namespace bd {

// Below about this many floats of work, starting and joining a parallel region (microseconds,
// much more when cores are shared) costs more than splitting the work saves.
inline constexpr int64_t kMinParallelWork = int64_t(1) << 15;

}  // namespace bd
