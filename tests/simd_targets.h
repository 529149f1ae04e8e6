// Kernel tests run once per SIMD target this CPU supports and the kernels were compiled for, so
// that every dispatch path (AVX-512, AVX2, SSE4, ...) is checked on one machine.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>

#include "hwy/targets.h"

namespace bd::test {

template <typename Body>
void for_each_target(Body body) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    body();
  }
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace bd::test
