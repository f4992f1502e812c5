// Host emulation of the CUDA device API that ../ssd_kernels.cuh uses, so the host C++
// compiler builds the same kernel source into a CPU test module (emulated_module.cpp).
//
// Execution model: a launch runs its clusters one after another; the threads of all blocks
// of one cluster run as cooperatively scheduled fibers (fibers.h) that switch only at
// __syncthreads, __shfl_down_sync and the cluster barrier, so a run is deterministic (three
// schedules: set_schedule). Each block
// has its own shared memory (SSD_SHARED), filled with 0xFF bytes (NaN doubles) at block
// start and again when the block exits (poisoned for AddressSanitizer), so reads of
// unwritten or departed shared memory show. Checked: full-mask shuffles in whole warps,
// barriers reached by every thread (else a deadlock error), 16-byte alignment of __ldcs /
// __stcs, map_shared_rank into a live block of the cluster, launch shapes, __trap().
// Not emulated: the memory model (every access is immediately visible), data races between
// clusters, timing, occupancy and code generation. Rules and limits: docs/kernels.md.
#pragma once

#define SSD_CUDA_EMULATION 1

#include <math.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../../half_convert.h"
#include "fibers.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define SSD_EMU_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define SSD_EMU_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define SSD_EMU_POISON(p, n) ((void)(p), (void)(n))
#define SSD_EMU_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct uint3 {
  unsigned x, y, z;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};

namespace ssd_emu {

constexpr unsigned kWarpSize = 32;
constexpr size_t kSharedBytes = 48 * 1024;  // static shared memory per block

// double -> a binary16-like format (kMant stored mantissa bits, exponent bias kBias),
// round to nearest even, directly from double (as __double2half / __double2bfloat16).
template <int kMant, int kBias>
uint16_t round_double(double x) {
  constexpr int kExpBits = 15 - kMant;
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const uint16_t inf = static_cast<uint16_t>(((1u << kExpBits) - 1) << kMant);
  if (std::isnan(x)) return sign | inf | static_cast<uint16_t>(1u << (kMant - 1));
  const double a = std::fabs(x);
  if (a >= std::ldexp(2.0 - std::ldexp(1.0, -(kMant + 1)), kBias)) return sign | inf;  // past max + half ulp
  if (a == 0.0) return sign;
  int e = 0;
  std::frexp(a, &e);  // a in [2^(e-1), 2^e)
  const int emin = 1 - kBias;
  const int exp = e - 1 < emin ? emin : e - 1;  // subnormals share the smallest binade's quantum
  const auto q = static_cast<uint32_t>(std::nearbyint(std::ldexp(a, kMant - exp)));  // exact scaling, RNE
  return sign | static_cast<uint16_t>((static_cast<uint32_t>(exp - emin) << kMant) + q);  // a carry rounds up
}

struct Warp {
  double slot[2][kWarpSize];  // double-buffered by shuffle parity
  unsigned arrived[2] = {0, 0};
  uint64_t done = 0;  // shuffles completed by the whole warp
};

struct Block {
  std::vector<unsigned char> shared;
  std::vector<Warp> warps;
  unsigned arrived = 0;  // at the current __syncthreads
  uint64_t generation = 0;
  unsigned exited = 0;
};

struct Thread {
  uint3 thread_idx;
  uint3 block_idx;
  unsigned rank;  // block rank in the cluster
  Block* block;
  uint64_t shuffles;
  uint64_t arrival;  // generation of this thread's pending split cluster-barrier arrival
};

struct Launch {
  uint3 grid_dim, block_dim;
  unsigned csize = 1;
  std::vector<Block> blocks;    // the running cluster's, by rank
  std::vector<Thread> threads;  // the running cluster's, by fiber
  std::map<const void*, size_t> layout;  // shared variable -> offset, the same in every block
  size_t shared_top = 0;
  unsigned cluster_arrived = 0;
  uint64_t cluster_generation = 0;
  void (*call)(void*) = nullptr;
  void* call_ctx = nullptr;
};

inline thread_local Launch* g_launch = nullptr;

// The schedule of the launches that follow on this thread. A correct kernel gives the same
// bits under every one; each exposes other missing barriers (docs/kernels.md):
enum class Schedule : int {
  kForward = 0,  // all threads of a cluster round-robin, first to last (fine interleaving:
                 // a reader of a lower thread's write runs after it, of a higher one's before)
  kReverse = 1,  // the blocks last to first, each running until all its threads wait or
                 // have exited, its threads last to first (a block can finish before a lower
                 // rank has read its shared memory; thread 0's writes come after the others' reads)
  kShuffle = 2,  // all threads of a cluster in a fresh seeded random order on every pass
};
inline thread_local Schedule g_schedule = Schedule::kForward;
inline thread_local unsigned long long g_schedule_seed = 0;
inline void set_schedule(Schedule s, unsigned long long seed = 0) {
  g_schedule = s;
  g_schedule_seed = seed;
}

inline Thread& this_thread() { return g_launch->threads[static_cast<size_t>(current_fiber())]; }

[[noreturn]] inline void fail(const std::string& what) {
  const Thread& t = this_thread();
  throw std::runtime_error("emulated kernel, block " + std::to_string(t.block_idx.x) + " thread " +
                           std::to_string(t.thread_idx.x) + ": " + what);
}

inline void* shared_variable(const void* tag, size_t size, size_t align) {
  Launch& L = *g_launch;
  auto it = L.layout.find(tag);
  if (it == L.layout.end()) {
    const size_t offset = (L.shared_top + align - 1) / align * align;
    if (offset + size > kSharedBytes) fail("static shared memory beyond 48 KiB");
    it = L.layout.emplace(tag, offset).first;
    L.shared_top = offset + size;
  }
  return this_thread().block->shared.data() + it->second;
}

inline void syncthreads() {
  Block& b = *this_thread().block;
  const uint64_t generation = b.generation;
  if (++b.arrived == g_launch->block_dim.x) {
    b.arrived = 0;
    ++b.generation;
    note_progress();
  } else {
    wait_until([&] { return b.generation != generation; });
  }
}

inline double shfl_down(unsigned mask, double v, unsigned delta) {
  Thread& t = this_thread();
  if (mask != 0xffffffffu) fail("__shfl_down_sync: only the full mask is emulated");
  if (g_launch->block_dim.x % kWarpSize != 0)
    fail("__shfl_down_sync with the full mask in a partial warp (blockDim.x " + std::to_string(g_launch->block_dim.x) +
         ")");
  const unsigned lane = t.thread_idx.x % kWarpSize;
  Warp& w = t.block->warps[t.thread_idx.x / kWarpSize];
  const uint64_t g = t.shuffles++;
  const int buf = static_cast<int>(g & 1);
  w.slot[buf][lane] = v;
  if (++w.arrived[buf] == kWarpSize) {
    w.arrived[buf] = 0;
    w.done = g + 1;
    note_progress();
  } else {
    wait_until([&] { return w.done > g; });
  }
  const unsigned src = lane + delta;
  return src < kWarpSize ? w.slot[buf][src] : v;
}

// Arrival at the cluster barrier; returns the generation to wait for the end of.
inline uint64_t cluster_arrive() {
  Launch& L = *g_launch;
  const uint64_t generation = L.cluster_generation;
  if (++L.cluster_arrived == L.csize * L.block_dim.x) {
    L.cluster_arrived = 0;
    ++L.cluster_generation;
    note_progress();
  }
  return generation;
}

inline void cluster_wait(uint64_t generation) {
  Launch& L = *g_launch;
  wait_until([&] { return L.cluster_generation != generation; });
}

inline void* map_shared_rank(void* addr, unsigned rank) {
  Launch& L = *g_launch;
  const Thread& t = this_thread();
  const auto* base = t.block->shared.data();
  const auto offset = static_cast<unsigned char*>(addr) - base;
  if (offset < 0 || static_cast<size_t>(offset) >= kSharedBytes)
    fail("map_shared_rank: the address is not in this block's shared memory");
  if (rank >= L.csize) fail("map_shared_rank: rank " + std::to_string(rank) + " in a cluster of " + std::to_string(L.csize));
  Block& other = L.blocks[rank];
  if (other.exited == L.block_dim.x)
    fail("map_shared_rank: block rank " + std::to_string(rank) + " has exited (its shared memory is gone)");
  return other.shared.data() + offset;
}

inline void check_aligned(const void* p, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) {
    char text[64];
    std::snprintf(text, sizeof text, "%p", p);
    fail(std::string(what) + ": misaligned 16-byte access at " + text + " (cudaErrorMisalignedAddress on a GPU)");
  }
}

inline void on_thread_exit() {
  Block& b = *this_thread().block;
  if (++b.exited == g_launch->block_dim.x) {  // the block is gone: so is its shared memory
    std::memset(b.shared.data(), 0xFF, kSharedBytes);
    SSD_EMU_POISON(b.shared.data(), kSharedBytes);
  }
}

inline void run_thread(void* ctx, int) {
  Launch& L = *static_cast<Launch*>(ctx);
  L.call(L.call_ctx);
  on_thread_exit();
}

// Runs `call` as the kernel body of every thread of grid x threads, clusters of csize.
inline void run_grid(int64_t grid, int threads, int csize, void (*call)(void*), void* call_ctx) {
  if (grid < 1 || grid > INT_MAX) throw std::invalid_argument("emulated launch: grid " + std::to_string(grid));
  if (threads < 1 || threads > 1024) throw std::invalid_argument("emulated launch: block " + std::to_string(threads));
  if (csize < 1 || csize > 16 || grid % csize != 0)
    throw std::invalid_argument("emulated launch: cluster " + std::to_string(csize) + " for grid " + std::to_string(grid));
  if (g_launch) throw std::logic_error("emulated launch inside a launch");
  Launch L;
  L.grid_dim = uint3{static_cast<unsigned>(grid), 1, 1};
  L.block_dim = uint3{static_cast<unsigned>(threads), 1, 1};
  L.csize = static_cast<unsigned>(csize);
  L.call = call;
  L.call_ctx = call_ctx;
  L.blocks.resize(L.csize);
  for (Block& b : L.blocks) {
    b.shared.resize(kSharedBytes);
    b.warps.resize((L.block_dim.x + kWarpSize - 1) / kWarpSize);
  }
  L.threads.resize(static_cast<size_t>(csize) * threads);
  struct Guard {
    ~Guard() { g_launch = nullptr; }
  } guard;
  g_launch = &L;
  for (int64_t first = 0; first < grid; first += csize) {
    for (unsigned r = 0; r < L.csize; ++r) {
      Block& b = L.blocks[r];
      SSD_EMU_UNPOISON(b.shared.data(), kSharedBytes);
      std::memset(b.shared.data(), 0xFF, kSharedBytes);
      for (Warp& w : b.warps) w = Warp{};
      b.arrived = b.exited = 0;
      b.generation = 0;
      for (unsigned i = 0; i < L.block_dim.x; ++i)
        L.threads[r * L.block_dim.x + i] = Thread{uint3{i, 0, 0}, uint3{static_cast<unsigned>(first + r), 0, 0}, r, &b, 0, 0};
    }
    L.cluster_arrived = 0;
    L.cluster_generation = 0;
    const bool reverse = g_schedule == Schedule::kReverse;
    run_fibers(csize * threads, &run_thread, &L, reverse ? threads : csize * threads, static_cast<Order>(g_schedule),
               g_schedule_seed + static_cast<unsigned long long>(first));
  }
  for (Block& b : L.blocks) SSD_EMU_UNPOISON(b.shared.data(), kSharedBytes);
}

// Launches kernel(args...) on grid x threads in clusters of csize and returns when it has
// finished (the emulation has one stream, in program order).
template <typename... P, typename... A>
void launch(void (*kernel)(P...), int64_t grid, int threads, int csize, A... args) {
  struct Call {
    void (*kernel)(P...);
    std::tuple<std::decay_t<P>...> params;
    static void run(void* self) { std::apply(static_cast<Call*>(self)->kernel, static_cast<Call*>(self)->params); }
  };
  Call call{kernel, std::tuple<std::decay_t<P>...>(static_cast<std::decay_t<P>>(args)...)};
  run_grid(grid, threads, csize, &Call::run, &call);
}

}  // namespace ssd_emu

// ---- the device API, as the kernels spell it
#define threadIdx (::ssd_emu::this_thread().thread_idx)
#define blockIdx (::ssd_emu::this_thread().block_idx)
#define blockDim (::ssd_emu::g_launch->block_dim)
#define gridDim (::ssd_emu::g_launch->grid_dim)

// Shared memory: one copy per block, at the same offset in every block of the launch.
#define SSD_SHARED(type, name, dims)             \
  static const char ssd_shared_tag_##name = 0;  \
  using ssd_shared_type_##name = type dims;     \
  ssd_shared_type_##name& name = *static_cast<ssd_shared_type_##name*>( \
      ::ssd_emu::shared_variable(&ssd_shared_tag_##name, sizeof(ssd_shared_type_##name), alignof(type)))

inline void __syncthreads() { ssd_emu::syncthreads(); }
inline double __shfl_down_sync(unsigned mask, double v, unsigned delta) { return ssd_emu::shfl_down(mask, v, delta); }
[[noreturn]] inline void __trap() {
  ssd_emu::fail("__trap() (on a GPU: cudaErrorLaunchFailure, a sticky error that ends the CUDA context)");
}

inline uint4 __ldcs(const uint4* p) {
  ssd_emu::check_aligned(p, "__ldcs");
  return *p;
}
inline void __stcs(uint4* p, uint4 v) {
  ssd_emu::check_aligned(p, "__stcs");
  *p = v;
}

inline float __half2float(__half h) { return ssd::half_to_float(h.bits); }
inline float __bfloat162float(__nv_bfloat16 h) { return ssd::bfloat16_to_float(h.bits); }
inline float __double2float_rn(double x) { return static_cast<float>(x); }
inline __half __double2half(double x) { return __half{ssd_emu::round_double<10, 15>(x)}; }
inline __nv_bfloat16 __double2bfloat16(double x) { return __nv_bfloat16{ssd_emu::round_double<7, 127>(x)}; }

// The split cluster barrier intrinsics (sm_90_rt.h). The relaxed arrive differs from the
// release one only in memory ordering, which the emulation does not model.
inline void __cluster_barrier_arrive() { ssd_emu::this_thread().arrival = ssd_emu::cluster_arrive(); }
inline void __cluster_barrier_arrive_relaxed() { __cluster_barrier_arrive(); }
inline void __cluster_barrier_wait() { ssd_emu::cluster_wait(ssd_emu::this_thread().arrival); }

namespace cooperative_groups {
class cluster_group {
 public:
  struct arrival_token {
    uint64_t generation;
  };
  void sync() const { ssd_emu::cluster_wait(ssd_emu::cluster_arrive()); }
  arrival_token barrier_arrive() const { return arrival_token{ssd_emu::cluster_arrive()}; }
  void barrier_wait(arrival_token&& token) const { ssd_emu::cluster_wait(token.generation); }
  template <typename T>
  T* map_shared_rank(T* addr, unsigned rank) const {
    return static_cast<T*>(ssd_emu::map_shared_rank(const_cast<void*>(static_cast<const void*>(addr)), rank));
  }
  unsigned block_rank() const { return ssd_emu::this_thread().rank; }
  unsigned num_blocks() const { return ssd_emu::g_launch->csize; }
};
inline cluster_group this_cluster() { return cluster_group{}; }
}  // namespace cooperative_groups
