// Launch plan of the CUDA kernels (host code, no CUDA header): which path, which
// instantiation, how many blocks; and the 64-bit index maths the kernels share with it.
// Compiled by nvcc for the real module and by the host compiler for the emulation
// (emulation/), so the plan for any pretend device runs on the CPU. Design: docs/kernels.md.
#pragma once

#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "../ssd_coefficients.h"  // SSD_HOST_DEVICE
#include "ssd_cuda_api.h"         // CudaPath

namespace ssd {

constexpr int kMaxThreads = 512;     // resident block size cap (register budget ~128/thread)
constexpr int kSplitThreads = 256;   // split-path block size
constexpr int kSplitUnroll = 4;      // packs per thread per chunk in the split path
constexpr int kMinSplitBytes = 64;   // a chunk region must hold an aligned 32-byte slot
constexpr int kMaxCluster = 16;      // 16 is non-portable: only where the device schedules it
constexpr int64_t kMaxGridX = INT_MAX;

// Launch-plan variants, measured side by side by bench/bench_cuda.py on a GPU (issue 21:
// performance leads, not assumed). SSD_TOOLKIT_CUDA_VARIANT (read at the first CUDA call) or
// _C.cuda_set_variant: a comma-separated list of
//   threads256      resident blocks of at most 256 threads (two per SM at <= 128 registers,
//                   so one block's barriers overlap the other's loads; a sample needs
//                   twice the packs per thread or twice the cluster, split from 64K fp32)
//   relaxed_arrive  the cluster's "done reading" arrive without release semantics (no
//                   MEMBAR.ALL.GPU before it)
// "" or "default": today's plan.
struct Variant {
  int max_threads = kMaxThreads;
  bool relaxed_arrive = false;

  std::string describe() const {
    std::string text = max_threads != kMaxThreads ? "threads" + std::to_string(max_threads) : "";
    if (relaxed_arrive) text += std::string(text.empty() ? "" : ",") + "relaxed_arrive";
    return text.empty() ? "default" : text;
  }
};

inline Variant parse_variant(const std::string& text) {
  Variant v;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = text.find(',', start) == std::string::npos ? text.size() : text.find(',', start);
    const std::string item = text.substr(start, end - start);
    if (item == "threads256") v.max_threads = 256;
    else if (item == "relaxed_arrive") v.relaxed_arrive = true;
    else if (!item.empty() && item != "default")
      throw std::invalid_argument("variant: expected a comma-separated list of 'default', 'threads256', "
                                  "'relaxed_arrive', got '" + text + "'");
    start = end + 1;
  }
  return v;
}

struct Plan {
  bool resident = false;
  bool relaxed_arrive = false;  // resident with clusters: the relaxed "done reading" arrive
  int vpt = 1;        // resident: 16-byte packs per thread (1, 2, 4)
  int csize = 1;      // resident: blocks per sample (a thread-block cluster when > 1)
  int threads = 32;   // block size
  int64_t chunk = 0;  // split: elements per chunk (the last chunk takes the rest)
  int64_t nchunks = 0;

  int64_t blocks_per_sample() const { return resident ? csize : nchunks; }

  // e.g. "resident cluster=8 vpt=1 threads=512 vec=16B" or "split chunk=4096 nchunks=3 vec=scalar".
  std::string describe(bool vec) const {
    std::string text = resident ? "resident cluster=" + std::to_string(csize) + " vpt=" + std::to_string(vpt) +
                                      " threads=" + std::to_string(threads)
                                : "split chunk=" + std::to_string(chunk) + " nchunks=" + std::to_string(nchunks);
    if (resident && csize > 1 && relaxed_arrive) text += " arrive=relaxed";
    return text + (vec ? " vec=16B" : " vec=scalar");
  }
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Elements per 16-byte pack.
SSD_HOST_DEVICE constexpr int pack_elems(int esize) { return 16 / esize; }

// Whether a kernel's loaded code contains the cluster code: the code is for sm_90+
// (binaryVersion) *and* its body was compiled for sm_90+ (ptxVersion). PTX for compute_89
// JIT-compiled on an H100 reports binaryVersion 90 but has __CUDA_ARCH__ 890 inside, where
// the cluster code is compiled out and __trap() stands instead.
inline bool cluster_code_compiled(int binary_version, int ptx_version) {
  return binary_version >= 90 && ptx_version >= 90;
}

// Chooses the path for samples of N elements of esize bytes. Resident candidates in order
// of preference: fewest packs per thread (more blocks, more SMs pulling bandwidth), then
// the smallest cluster that holds the sample; cluster size 16 only as the last resort.
// `cluster` > 0 allows only that cluster size (tests); can_cluster(vpt, csize, threads)
// says whether such a cluster launch can run (always true for csize 1). `variant` caps the
// resident block size and picks the arrive.
template <class CanCluster>
Plan make_plan(int64_t N, int esize, CudaPath mode, int cluster, CanCluster&& can_cluster,
               const Variant& variant = Variant{}) {
  const int max_threads = variant.max_threads;
  const int V = pack_elems(esize);
  const bool split_ok = N * esize >= kMinSplitBytes;
  const int64_t packs = ceil_div(N, V);
  Plan plan;
  if (mode != CudaPath::kSplit || !split_ok) {
    const int max_c = mode == CudaPath::kAuto ? kMaxCluster : 1;
    static const int cands[][2] = {{1, 1}, {1, 2}, {1, 4}, {1, 8}, {2, 1}, {2, 2}, {2, 4}, {2, 8},
                                   {4, 1}, {4, 2}, {4, 4}, {4, 8}, {1, 16}, {2, 16}, {4, 16}};
    for (const auto& cand : cands) {
      const int vpt = cand[0], csize = cand[1];
      if (csize > max_c || (cluster > 0 && csize != cluster)) continue;
      if (static_cast<int64_t>(csize) * max_threads * vpt < packs) continue;
      const int64_t per_block = ceil_div(packs, static_cast<int64_t>(csize) * vpt);
      const int threads = static_cast<int>(ceil_div(per_block > 0 ? per_block : 1, 32) * 32);
      if (csize > 1 && !can_cluster(vpt, csize, threads)) continue;
      plan.resident = true;
      plan.vpt = vpt;
      plan.csize = csize;
      plan.threads = threads;
      plan.relaxed_arrive = variant.relaxed_arrive;
      return plan;
    }
    if (!split_ok)
      throw std::invalid_argument("cluster: expected a cluster size that holds a sample of N=" + std::to_string(N) +
                                  " elements, got " + std::to_string(cluster));
  }
  plan.threads = kSplitThreads;
  plan.chunk = static_cast<int64_t>(kSplitThreads) * kSplitUnroll * V;
  plan.nchunks = N / plan.chunk > 0 ? N / plan.chunk : 1;  // the last chunk takes the rest
  if (plan.nchunks == 1) plan.chunk = N;
  return plan;
}

// Samples per launch so that grid.x = rows * per_row <= max_grid (64-bit maths). Throws
// when a single sample needs more blocks than a grid holds (N beyond ~8.8e12 elements).
inline int64_t rows_per_launch(int64_t per_row, int64_t max_grid) {
  if (per_row < 1 || per_row > max_grid)
    throw std::invalid_argument("N: expected a sample that fits one grid (" + std::to_string(max_grid) +
                                " blocks), got one needing " + std::to_string(per_row) + " blocks");
  return max_grid / per_row;
}

// ---- index maths shared by the kernels and the plan (all 64-bit; tests run it past 2^31)
// Sample of block `block` in a launch whose first sample is b0.
SSD_HOST_DEVICE int64_t sample_of_block(int64_t b0, int64_t block, int64_t per_row) { return b0 + block / per_row; }

// Resident path: first element of pack j of thread `tid` in block `rank` of a sample.
SSD_HOST_DEVICE int64_t resident_elem(int64_t rank, int vpt, int j, int64_t threads, int64_t tid, int V) {
  return ((rank * vpt + j) * threads + tid) * V;
}

// Split path: [chunk_begin, chunk_end) of chunk k (the last one extends to N).
SSD_HOST_DEVICE int64_t chunk_begin(int64_t k, int64_t chunk) { return k * chunk; }
SSD_HOST_DEVICE int64_t chunk_end(int64_t k, int64_t chunk, int64_t nchunks, int64_t N) {
  return k == nchunks - 1 ? N : (k + 1) * chunk;
}

// Split path: address of the 8-byte-aligned 32-byte slot in the output region of chunk k of
// sample b (every chunk is >= 64 bytes, so the slot fits).
SSD_HOST_DEVICE uintptr_t chunk_slot_address(uintptr_t out, int64_t b, int64_t k, int64_t N, int64_t chunk,
                                             int esize) {
  const uintptr_t addr = out + static_cast<uintptr_t>((b * N + k * chunk) * esize);
  return (addr + 7) & ~static_cast<uintptr_t>(7);
}

}  // namespace ssd
