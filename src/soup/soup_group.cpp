#include "soup/soup_group.h"

#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <string>

#include "core/error.h"

#ifdef BITDELTA_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only
#include <mpi.h>
#endif

namespace bd {

void SoupGroup::broadcast(double*, size_t, int) const {}

const SoupGroup& single_process() {
  static const SoupGroup alone;
  return alone;
}

namespace {

int launched_ranks() {
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  return size && *size ? std::atoi(size) : 0;
}

#ifdef BITDELTA_MPI
class MpiGroup : public SoupGroup {
 public:
  MpiGroup() {
    int provided = 0;  // OpenMP threads compute; only the main thread calls MPI
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiGroup() override { MPI_Finalize(); }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void broadcast(double* data, size_t count, int root) const override {
    constexpr size_t kChunk = size_t(1) << 30;  // MPI counts are int
    for (size_t done = 0; done < count; done += kChunk)
      MPI_Bcast(data + done, int(std::min(kChunk, count - done)), MPI_DOUBLE, root, MPI_COMM_WORLD);
  }
  bool all_ok(bool ok) const override {
    int value = ok ? 1 : 0;
    MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return value == 1;
  }

 private:
  int rank_ = 0, size_ = 1;
};
#endif

}  // namespace

std::unique_ptr<SoupGroup> join_mpi_job() {
  const int ranks = launched_ranks();
  if (ranks == 0) return nullptr;
#ifdef BITDELTA_MPI
  return std::make_unique<MpiGroup>();
#else
  if (ranks > 1)
    fail("started by mpirun with ", ranks,
         " ranks, but this bitdelta was built without MPI (install libopenmpi-dev and rebuild)");
  return nullptr;
#endif
}

std::vector<int> tensor_owners(const SoupInputs& inputs, int ranks) {
  const std::vector<SoupTensor>& tensors = inputs.tensors();
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return tensors[a].numel() > tensors[b].numel(); });
  std::vector<int> owners(tensors.size(), 0);
  std::vector<int64_t> load(size_t(std::max(1, ranks)), 0);
  for (size_t t : order) {
    const int rank = int(std::min_element(load.begin(), load.end()) - load.begin());
    owners[t] = rank;
    load[size_t(rank)] += tensors[t].numel();
  }
  return owners;
}

void run_together(const SoupGroup& group, bool here, const std::function<void()>& step) {
  std::string error;
  if (here) try {
      step();
    } catch (const std::exception& e) {
      error = e.what();
    }
  if (!group.all_ok(error.empty()))
    fail(error.empty() ? cat("rank ", group.rank(), ": another rank of the soup failed") : error);
}

}  // namespace bd
