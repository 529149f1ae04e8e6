// Threading: one OpenMP pool shared by our kernels and OpenBLAS (its OpenMP build).
#pragma once

namespace bd {

// Sets the number of threads every later kernel uses; n <= 0 means all cores.
void set_threads(int n);
int num_threads();

}  // namespace bd
