// The processes that build one soup together: the ranks of an Open MPI job
// (`mpirun -np K bitdelta soup ...`, docs/deltasoup.md) or this process alone. Every rank opens
// every input and makes the same decisions; each tensor belongs to one rank, which aggregates it
// and writes its bytes into the shared output file. Pass 1's per-tensor statistics are broadcast
// by their owners and summed in tensor order by every rank, as one process sums them, so the
// output is byte-identical for any number of ranks.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "soup/soup_inputs.h"

namespace bd {

class SoupGroup {
 public:
  virtual ~SoupGroup() = default;
  virtual int rank() const { return 0; }
  virtual int size() const { return 1; }
  // data[0 .. count) from rank `root` to every rank (collective).
  virtual void broadcast(double* data, size_t count, int root) const;
  // Whether every rank passed ok == true (collective).
  virtual bool all_ok(bool ok) const { return ok; }
};

// This process alone.
const SoupGroup& single_process();

// The Open MPI job this process was started in by mpirun (it sets OMPI_COMM_WORLD_SIZE), or
// nullptr when it was started alone. Throws bd::Error, one line, when mpirun started several
// ranks of a build without MPI (they would all write the same output).
std::unique_ptr<SoupGroup> join_mpi_job();

// The rank that owns each tensor: tensors by decreasing size, each to the rank with the fewest
// coordinates so far (the lowest on a tie).
std::vector<int> tensor_owners(const SoupInputs& inputs, int ranks);

// Runs `step` where `here`, then agrees with the other ranks: an error on any rank becomes an
// error on every rank (its message where it happened), so none waits forever in a collective.
void run_together(const SoupGroup& group, bool here, const std::function<void()>& step);

}  // namespace bd
