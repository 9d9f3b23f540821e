// Thin RAII over the MPI C API: what ctnn's data-parallel training needs, nothing more.
//
// Optional: only code that includes ctnn/dist/ needs MPI (CMake target ctnn::mpi, which adds
// MPI::MPI_CXX to ctnn::ctnn). Every call checks its return code; MPI's default error handler
// already aborts the job on communication errors, so the checks catch misuse, not the network.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace ctnn::dist {

namespace detail {
inline void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw std::runtime_error(std::string("ctnn::dist: ") + what + " failed: " + std::string(text, static_cast<std::size_t>(len)));
}
// MPI counts are int: longer buffers go in pieces.
inline constexpr std::size_t max_count = static_cast<std::size_t>(std::numeric_limits<int>::max());
}  // namespace detail

// Whether this process was started by an MPI launcher (Open MPI's mpiexec, MPICH's Hydra, PMIx):
// programs that also run alone can start MPI only then.
inline bool launched_by_mpiexec() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

// Whether MPI has been started (and not yet finalised) in this process.
inline bool initialized() {
  int started = 0, finished = 0;
  MPI_Initialized(&started);
  MPI_Finalized(&finished);
  return started && !finished;
}

// MPI_Init_thread on construction, MPI_Finalize on destruction: one per program, in main().
// MPI_THREAD_FUNNELED: ctnn's OpenMP threads never call MPI; only the thread that runs the
// training step does.
class Environment {
 public:
  Environment(int& argc, char**& argv) {
    int provided = 0;
    detail::check(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      throw std::runtime_error("ctnn::dist: this MPI library does not support MPI_THREAD_FUNNELED");
    }
  }
  ~Environment() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;
};

// A communicator (MPI_COMM_WORLD by default; not owned). The collective calls must be made by
// every process of the communicator, in the same order.
class Communicator {
 public:
  explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    detail::check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    detail::check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  MPI_Comm handle() const { return comm_; }

  // Element-wise sum over every process, in place; every process gets the same result.
  void allreduce_sum(std::span<float> v) const { allreduce(v.data(), v.size(), MPI_FLOAT); }
  void allreduce_sum(std::span<double> v) const { allreduce(v.data(), v.size(), MPI_DOUBLE); }
  void allreduce_sum(std::span<std::int64_t> v) const { allreduce(v.data(), v.size(), MPI_INT64_T); }

  // Process `root`'s bytes, on every process.
  void broadcast(std::string& s, int root = 0) const {
    std::uint64_t n = s.size();
    detail::check(MPI_Bcast(&n, 1, MPI_UINT64_T, root, comm_), "MPI_Bcast");
    s.resize(n);
    for (std::size_t at = 0; at < n; at += detail::max_count)
      detail::check(MPI_Bcast(s.data() + at, static_cast<int>(std::min<std::size_t>(n - at, detail::max_count)),
                              MPI_CHAR, root, comm_),
                    "MPI_Bcast");
  }
  void barrier() const { detail::check(MPI_Barrier(comm_), "MPI_Barrier"); }
  // A barrier that sleeps while it waits (MPI_Ibarrier, tested every millisecond), where
  // MPI_Barrier may spin: a process that is done does not take a core that another still needs.
  void wait_for_all() const {
    MPI_Request request;
    detail::check(MPI_Ibarrier(comm_, &request), "MPI_Ibarrier");
    for (int done = 0;;) {
      detail::check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test");
      if (done) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  // Ends every process of the job with `code` (the launcher reports it). For a failure on one
  // process that the others cannot know about: they would otherwise wait for it forever.
  [[noreturn]] void abort(int code) const {
    MPI_Abort(comm_, code);
    std::_Exit(code);  // MPI_Abort does not return; this satisfies [[noreturn]]
  }

 private:
  void allreduce(void* data, std::size_t n, MPI_Datatype type) const {
    int bytes = 0;
    MPI_Type_size(type, &bytes);
    auto* p = static_cast<char*>(data);
    for (std::size_t at = 0; at < n; at += detail::max_count)
      detail::check(MPI_Allreduce(MPI_IN_PLACE, p + at * static_cast<std::size_t>(bytes),
                                  static_cast<int>(std::min(n - at, detail::max_count)), type, MPI_SUM, comm_),
                    "MPI_Allreduce");
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace ctnn::dist
