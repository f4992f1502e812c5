// Fused CUDA kernel of the Stable Score Distillation estimator (Algorithm 1).
//
// Semantics: exactly ssd_toolkit/reference.py (per sample b of a [B, N] view:
// t_b > M -> E_b = c - u; t_b <= M -> E_b = scale_b (c - r_b n), r_b = <c,n>/||n||^2, ...).
//
// DESIGN
// ------
// Traffic floor: read eps_cond, eps_uncond, noise once and write E once (4N elements).
// A sample needs all of its four sums (||h||^2, ||c||^2, <c,n>, ||n||^2) before its first
// output element, so a naive design reads the inputs twice (6N-7N).
//
// 1. Resident path (~4N, one launch). Each sample is held on chip between its reduction
//    and its write: a "cluster" of C blocks (C = 1, 2, 4, 8, or 16 non-portable) owns one
//    sample; every thread loads VPT 16-byte packs (VPT = 1, 2, 4) of each input into
//    registers, accumulates the four sums, and the block reduces them (warp shuffles, then
//    one warp over the per-warp results). With C > 1 (sm_90 thread-block clusters), each
//    block publishes its four sums in shared memory and every block reads all C of them
//    through distributed shared memory in rank order 0..C-1, so all blocks of a cluster
//    compute bitwise-identical coefficients without touching global memory. The output
//    is then written from the registers. Capacity per sample: C * 512 threads * VPT * 16 B
//    per input, i.e. 256 KiB per input with C = 8 (4x128x128 fp32, 4x128x256 fp16) and
//    512 KiB with C = 16 where the device can schedule it (cudaOccupancyMaxActiveClusters).
//    Registers hold the raw 16-byte packs, so the register cost (12 * VPT words) does not
//    depend on the dtype. Without clusters (sm_80/86/89, or when the binary for the
//    device lacks sm_90 code) C = 1: up to 32 KiB per input per sample.
// 2. Split path (any N, ~6N, three launches, no workspace). partial_kernel: block (b, k)
//    reduces chunk k of sample b and stores its four float64 sums in the *output* region of
//    that chunk (every chunk is >= 64 bytes, so an 8-byte-aligned 32-byte slot fits);
//    finalize_kernel: one block per sample sums the chunk partials in a fixed order,
//    writes the stats, and stores the coefficients (r, output scale, branch) into every
//    chunk's slot; write_kernel: block (b, k) reads its own slot, then overwrites its
//    region with E, re-reading only the two inputs its branch needs (c, n or c, u). No
//    block ever reads a region another block of the same launch writes. The re-read is
//    served from L2 when the batch fits (50 MB on H100). Using the output as scratch
//    means no workspace: nothing to cache, nothing to grow, nothing that breaks under
//    CUDA-graph capture or concurrent streams.
//
// Precision: every element is converted to float64 and all arithmetic (the four sums,
// the coefficients, c - r n and the rescaling) is float64, rounded once to the output
// dtype. Why: ||eps_tilde||^2 = ||c||^2 - <c,n>^2/||n||^2 cancels catastrophically near
// collinearity; with float32 products/sums the relative error of ||eps_tilde||^2 is about
// 1e-7 * ||c||^2 / ||eps_tilde||^2, i.e. 10% at the 1e-6 collinearity threshold, and the
// elementwise c - r n cancels the same way. In float64 the products of fp16/bf16/fp32
// inputs are exact and the error stays ~1e-16 * ||c||^2 / ||eps_tilde||^2. The cost is
// 3 conversions + 5 float64 operations per element: far under H100/A100 float64 rates
// at memory speed; on GeForce parts (1/64-rate float64) the kernel is ALU-bound instead.
//
// Determinism: no atomics at all; every reduction has a fixed shape that depends only on
// (N, dtype, alignment, the chosen path), so repeated runs are bitwise identical.
//
// Memory access: 16-byte vector loads/stores when all four pointers are 16-byte aligned
// and N is a multiple of the pack width (then every row is aligned); otherwise the same
// layout with scalar accesses (each thread still owns 16 consecutive bytes' worth of
// elements). Inputs read once use streaming loads (__ldcs), the output streaming stores.
//
// Launch: on the given stream, no allocation, no synchronisation, no host round trip;
// per-device facts (cluster support, occupancy) are queried once and cached, so a warmed
// call is capturable in a CUDA graph. Batches larger than the grid limit are launched in
// slices.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "../ssd_core.h"
#include "ssd_cuda_api.h"

namespace cg = cooperative_groups;

namespace ssd {
namespace {

constexpr int kMaxThreads = 512;      // resident block size cap (register budget ~128/thread)
constexpr int kSplitThreads = 256;    // split-path block size
constexpr int kSplitUnroll = 4;       // packs per thread per chunk in the split path
constexpr int kMinSplitBytes = 64;    // a chunk region must hold an aligned 32-byte slot
constexpr int kMaxCluster = 16;

// Kernel-side parameters: the public struct plus the stats leading dimension (batch slices).
struct KParams {
  const void* c;
  const void* u;
  const void* n;
  void* out;
  const double* t;
  double t_scalar;
  double* stats;
  int64_t stats_ld;
  int64_t B;
  int64_t N;
  double M;
};

template <typename T>
struct alignas(16) Pack {
  static constexpr int kVec = 16 / sizeof(T);
  T v[kVec];
};

__device__ __forceinline__ double to_f64(float x) { return static_cast<double>(x); }
__device__ __forceinline__ double to_f64(double x) { return x; }
__device__ __forceinline__ double to_f64(__half x) { return static_cast<double>(__half2float(x)); }
__device__ __forceinline__ double to_f64(__nv_bfloat16 x) { return static_cast<double>(__bfloat162float(x)); }

template <typename T>
__device__ __forceinline__ T from_f64(double x);
template <>
__device__ __forceinline__ float from_f64<float>(double x) { return __double2float_rn(x); }
template <>
__device__ __forceinline__ double from_f64<double>(double x) { return x; }
template <>
__device__ __forceinline__ __half from_f64<__half>(double x) { return __double2half(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f64<__nv_bfloat16>(double x) { return __double2bfloat16(x); }

struct Sums {
  double hh, cc, cn, nn;
};

__device__ __forceinline__ void accumulate(Sums& s, double c, double u, double n) {
  const double h = c - u;
  s.hh = fma(h, h, s.hh);
  s.cc = fma(c, c, s.cc);
  s.cn = fma(c, n, s.cn);
  s.nn = fma(n, n, s.nn);
}

__device__ __forceinline__ Sums warp_reduce(Sums s) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    s.hh += __shfl_down_sync(0xffffffffu, s.hh, off);
    s.cc += __shfl_down_sync(0xffffffffu, s.cc, off);
    s.cn += __shfl_down_sync(0xffffffffu, s.cn, off);
    s.nn += __shfl_down_sync(0xffffffffu, s.nn, off);
  }
  return s;
}

// Fixed-shape block reduction; the result is valid in thread 0. Ends with no pending
// shared-memory hazards for the caller (scratch is only reused after a barrier).
__device__ Sums block_reduce(Sums s, Sums* scratch /* [32] shared */) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  s = warp_reduce(s);
  if (lane == 0) scratch[warp] = s;
  __syncthreads();
  if (warp == 0) {
    const int nwarps = (blockDim.x + 31) >> 5;
    s = lane < nwarps ? scratch[lane] : Sums{0.0, 0.0, 0.0, 0.0};
    s = warp_reduce(s);
  }
  return s;
}

// Per-sample coefficients, exactly as reference.coefficients / estimate_reference.
struct Coef {
  double r;          // projection ratio
  double out_scale;  // scale, or NaN when a sum is non-finite
  double branch;     // 1.0: t_b <= M (rescaled), 0.0: t_b > M (h)
  double pad;
};

__device__ Coef finish(const Sums& s, const KParams& p, int64_t b) {
  const bool has_noise = s.nn > 0.0;
  const double r = has_noise ? s.cn / s.nn : 0.0;
  double et2 = has_noise ? s.cc - s.cn * s.cn / s.nn : s.cc;
  if (!(et2 > 0.0) && !isnan(et2)) et2 = 0.0;
  const bool degenerate = et2 <= kCollinearRtol2 * s.cc;
  const double scale = degenerate ? 0.0 : sqrt(s.hh) / sqrt(et2);
  const bool finite = isfinite(s.hh) && isfinite(s.cc) && isfinite(s.cn) && isfinite(s.nn);
  const double t = p.t ? p.t[b] : p.t_scalar;
  if (p.stats) {
    p.stats[0 * p.stats_ld + b] = r;
    p.stats[1 * p.stats_ld + b] = sqrt(s.hh);
    p.stats[2 * p.stats_ld + b] = sqrt(et2);
    p.stats[3 * p.stats_ld + b] = sqrt(s.cc);
    p.stats[4 * p.stats_ld + b] = sqrt(s.nn);
    p.stats[5 * p.stats_ld + b] = scale;
  }
  return Coef{r, finite ? scale : __longlong_as_double(0x7ff8000000000000LL), t <= p.M ? 1.0 : 0.0, 0.0};
}

template <typename T>
__device__ __forceinline__ T out_elem(T c, T u, T n, const Coef& k) {
  const double cd = to_f64(c);
  return from_f64<T>(k.branch != 0.0 ? k.out_scale * (cd - k.r * to_f64(n)) : cd - to_f64(u));
}

// 16-byte pack i of a row (element offset i * kVec), streaming or cached, vector or scalar.
template <typename T, bool kVector>
__device__ __forceinline__ Pack<T> load_pack(const T* row, int64_t elem, int64_t N) {
  Pack<T> pk;
  if (kVector) {
    if (elem < N) {
      const uint4 raw = __ldcs(reinterpret_cast<const uint4*>(row + elem));
      pk = *reinterpret_cast<const Pack<T>*>(&raw);
    } else {
#pragma unroll
      for (int e = 0; e < Pack<T>::kVec; ++e) pk.v[e] = from_f64<T>(0.0);
    }
  } else {
#pragma unroll
    for (int e = 0; e < Pack<T>::kVec; ++e) pk.v[e] = elem + e < N ? row[elem + e] : from_f64<T>(0.0);
  }
  return pk;
}

template <typename T, bool kVector>
__device__ __forceinline__ void store_pack(T* row, int64_t elem, int64_t N, const Pack<T>& pk) {
  if (kVector) {
    if (elem < N) __stcs(reinterpret_cast<uint4*>(row + elem), *reinterpret_cast<const uint4*>(&pk));
  } else {
#pragma unroll
    for (int e = 0; e < Pack<T>::kVec; ++e)
      if (elem + e < N) row[elem + e] = pk.v[e];
  }
}

// ---------------------------------------------------------------------------------------
// Resident path: grid.x = B * C, one (cluster of) block(s) per sample.
template <typename T, int VPT, bool kVector>
__global__ void __launch_bounds__(kMaxThreads) resident_kernel(KParams p, int csize) {
  constexpr int V = Pack<T>::kVec;
  __shared__ Sums scratch[32];
  __shared__ Coef coef;
  const int64_t b = blockIdx.x / csize;
  const int rank = static_cast<int>(blockIdx.x % csize);
  const int64_t row = b * p.N;
  const T* c = static_cast<const T*>(p.c) + row;
  const T* u = static_cast<const T*>(p.u) + row;
  const T* n = static_cast<const T*>(p.n) + row;
  T* out = static_cast<T*>(p.out) + row;

  Pack<T> rc[VPT], ru[VPT], rn[VPT];
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int64_t e = ((static_cast<int64_t>(rank) * VPT + j) * blockDim.x + threadIdx.x) * V;
    rc[j] = load_pack<T, kVector>(c, e, p.N);
    ru[j] = load_pack<T, kVector>(u, e, p.N);
    rn[j] = load_pack<T, kVector>(n, e, p.N);
  }
  Sums s{0.0, 0.0, 0.0, 0.0};
#pragma unroll
  for (int j = 0; j < VPT; ++j)
#pragma unroll
    for (int e = 0; e < V; ++e) accumulate(s, to_f64(rc[j].v[e]), to_f64(ru[j].v[e]), to_f64(rn[j].v[e]));
  s = block_reduce(s, scratch);

  if (csize > 1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    __shared__ double part[4];  // this block's sums, read by the whole cluster
    cg::cluster_group cluster = cg::this_cluster();
    if (threadIdx.x == 0) {
      part[0] = s.hh;
      part[1] = s.cc;
      part[2] = s.cn;
      part[3] = s.nn;
    }
    cluster.sync();  // every block's partial is published
    if (threadIdx.x == 0) {
      Sums tot{0.0, 0.0, 0.0, 0.0};
      for (int r = 0; r < csize; ++r) {  // rank order: identical in every block
        const double* remote = cluster.map_shared_rank(part, r);
        tot.hh += remote[0];
        tot.cc += remote[1];
        tot.cn += remote[2];
        tot.nn += remote[3];
      }
      KParams q = p;
      if (rank != 0) q.stats = nullptr;  // one writer per sample
      coef = finish(tot, q, b);
    }
    cluster.sync();  // remote reads done before any block exits; coef visible block-wide
#else
    __trap();  // the host launches clusters only for sm_90+ binaries
#endif
  } else {
    if (threadIdx.x == 0) coef = finish(s, p, b);
    __syncthreads();
  }
  const Coef k = coef;
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int64_t e = ((static_cast<int64_t>(rank) * VPT + j) * blockDim.x + threadIdx.x) * V;
    Pack<T> o;
#pragma unroll
    for (int q = 0; q < V; ++q) o.v[q] = out_elem(rc[j].v[q], ru[j].v[q], rn[j].v[q], k);
    store_pack<T, kVector>(out, e, p.N, o);
  }
}

// ---------------------------------------------------------------------------------------
// Split path: grid.x = B * nchunks; chunk k of a row is [k*chunk, (k+1)*chunk), the last
// one extends to N. Each chunk region of the output holds an 8-byte-aligned 32-byte slot.
__device__ __forceinline__ double* chunk_slot(void* out, int64_t b, int64_t k, int64_t N, int64_t chunk,
                                              int esize) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(out) + static_cast<uintptr_t>((b * N + k * chunk) * esize);
  return reinterpret_cast<double*>((addr + 7) & ~static_cast<uintptr_t>(7));
}

template <typename T, bool kVector>
__global__ void __launch_bounds__(kSplitThreads) partial_kernel(KParams p, int64_t chunk, int64_t nchunks) {
  constexpr int V = Pack<T>::kVec;
  __shared__ Sums scratch[32];
  const int64_t b = blockIdx.x / nchunks;
  const int64_t k = blockIdx.x % nchunks;
  const int64_t begin = k * chunk;
  const int64_t end = k == nchunks - 1 ? p.N : begin + chunk;
  const int64_t row = b * p.N;
  const T* c = static_cast<const T*>(p.c) + row;
  const T* u = static_cast<const T*>(p.u) + row;
  const T* n = static_cast<const T*>(p.n) + row;
  Sums s{0.0, 0.0, 0.0, 0.0};
  // Packs of kVec elements (a scalar-mode pack may straddle `end`: masked below).
  for (int64_t e0 = begin + static_cast<int64_t>(threadIdx.x) * V; e0 < end;
       e0 += static_cast<int64_t>(kSplitUnroll) * blockDim.x * V) {
    Pack<T> rc[kSplitUnroll], ru[kSplitUnroll], rn[kSplitUnroll];
#pragma unroll
    for (int j = 0; j < kSplitUnroll; ++j) {
      const int64_t e = e0 + static_cast<int64_t>(j) * blockDim.x * V;
      const int64_t lim = e < end ? end : e;  // lim == e masks the whole pack
      if (kVector && e < end) {  // cached loads: write_kernel re-reads these from L2
        const uint4 c4 = *reinterpret_cast<const uint4*>(c + e);
        const uint4 u4 = *reinterpret_cast<const uint4*>(u + e);
        const uint4 n4 = *reinterpret_cast<const uint4*>(n + e);
        rc[j] = *reinterpret_cast<const Pack<T>*>(&c4);
        ru[j] = *reinterpret_cast<const Pack<T>*>(&u4);
        rn[j] = *reinterpret_cast<const Pack<T>*>(&n4);
      } else {
#pragma unroll
        for (int q = 0; q < V; ++q) {
          const bool ok = e + q < lim;
          rc[j].v[q] = ok ? c[e + q] : from_f64<T>(0.0);
          ru[j].v[q] = ok ? u[e + q] : from_f64<T>(0.0);
          rn[j].v[q] = ok ? n[e + q] : from_f64<T>(0.0);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kSplitUnroll; ++j)
#pragma unroll
      for (int q = 0; q < V; ++q) accumulate(s, to_f64(rc[j].v[q]), to_f64(ru[j].v[q]), to_f64(rn[j].v[q]));
  }
  s = block_reduce(s, scratch);
  if (threadIdx.x == 0) {
    double* slot = chunk_slot(p.out, b, k, p.N, chunk, sizeof(T));
    slot[0] = s.hh;
    slot[1] = s.cc;
    slot[2] = s.cn;
    slot[3] = s.nn;
  }
}

__global__ void __launch_bounds__(kSplitThreads) finalize_kernel(KParams p, int64_t chunk, int64_t nchunks,
                                                                  int esize) {
  __shared__ Sums scratch[32];
  __shared__ Coef coef;
  const int64_t b = blockIdx.x;
  Sums s{0.0, 0.0, 0.0, 0.0};
  for (int64_t k = threadIdx.x; k < nchunks; k += blockDim.x) {  // fixed order per thread
    const double* slot = chunk_slot(p.out, b, k, p.N, chunk, esize);
    s.hh += slot[0];
    s.cc += slot[1];
    s.cn += slot[2];
    s.nn += slot[3];
  }
  s = block_reduce(s, scratch);  // its barrier also ends every read of the slots
  if (threadIdx.x == 0) coef = finish(s, p, b);
  __syncthreads();
  const Coef k = coef;
  for (int64_t i = threadIdx.x; i < nchunks; i += blockDim.x) {
    double* slot = chunk_slot(p.out, b, i, p.N, chunk, esize);
    slot[0] = k.r;
    slot[1] = k.out_scale;
    slot[2] = k.branch;
  }
}

template <typename T, bool kVector>
__global__ void __launch_bounds__(kSplitThreads) write_kernel(KParams p, int64_t chunk, int64_t nchunks) {
  constexpr int V = Pack<T>::kVec;
  __shared__ Coef coef;
  const int64_t b = blockIdx.x / nchunks;
  const int64_t k = blockIdx.x % nchunks;
  if (threadIdx.x == 0) {
    const double* slot = chunk_slot(p.out, b, k, p.N, chunk, sizeof(T));
    coef = Coef{slot[0], slot[1], slot[2], 0.0};
  }
  __syncthreads();  // the slot is read before this block overwrites its region
  const Coef kc = coef;
  const int64_t begin = k * chunk;
  const int64_t end = k == nchunks - 1 ? p.N : begin + chunk;
  const int64_t row = b * p.N;
  const T* c = static_cast<const T*>(p.c) + row;
  // The branch decides the second input: noise (rescaled) or eps_uncond (h); the other
  // one is never read.
  const T* other = static_cast<const T*>(kc.branch != 0.0 ? p.n : p.u) + row;
  T* out = static_cast<T*>(p.out) + row;
  for (int64_t e = begin + static_cast<int64_t>(threadIdx.x) * V; e < end;
       e += static_cast<int64_t>(blockDim.x) * V) {
    Pack<T> pc, po, res;
    if (kVector) {
      const uint4 c4 = __ldcs(reinterpret_cast<const uint4*>(c + e));
      const uint4 o4 = __ldcs(reinterpret_cast<const uint4*>(other + e));
      pc = *reinterpret_cast<const Pack<T>*>(&c4);
      po = *reinterpret_cast<const Pack<T>*>(&o4);
    } else {
#pragma unroll
      for (int q = 0; q < V; ++q) {
        const bool ok = e + q < end;
        pc.v[q] = ok ? c[e + q] : from_f64<T>(0.0);
        po.v[q] = ok ? other[e + q] : from_f64<T>(0.0);
      }
    }
#pragma unroll
    for (int q = 0; q < V; ++q) res.v[q] = out_elem(pc.v[q], po.v[q], po.v[q], kc);
    if (kVector) {
      __stcs(reinterpret_cast<uint4*>(out + e), *reinterpret_cast<const uint4*>(&res));
    } else {
#pragma unroll
      for (int q = 0; q < V; ++q)
        if (e + q < end) out[e + q] = res.v[q];
    }
  }
}

// ---------------------------------------------------------------------------------------
// Host side.
std::atomic<int> g_path{static_cast<int>(CudaPath::kAuto)};

struct DeviceFacts {
  int major = 0;
  int sms = 0;
};

std::mutex g_mutex;
std::map<int, DeviceFacts> g_devices;
// (device, kernel, cluster size, threads) -> can the cluster launch be scheduled
std::map<std::tuple<int, const void*, int, int>, bool> g_cluster_ok;

cudaError_t device_facts(int dev, DeviceFacts* out) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_devices.find(dev);
  if (it == g_devices.end()) {
    DeviceFacts f;
    cudaError_t err = cudaDeviceGetAttribute(&f.major, cudaDevAttrComputeCapabilityMajor, dev);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&f.sms, cudaDevAttrMultiProcessorCount, dev);
    if (err != cudaSuccess) return err;
    it = g_devices.emplace(dev, f).first;
  }
  *out = it->second;
  return cudaSuccess;
}

// Whether `kernel` can run as clusters of `csize` blocks of `threads` on `dev`: the device
// is sm_90+, the kernel body was compiled for sm_90+ (binaryVersion alone is not enough:
// PTX for compute_89 JIT-compiled on an H100 reports binaryVersion 90 but its body has
// __CUDA_ARCH__ 890 and reaches __trap()), and at least one such cluster fits. A refused
// query leaves no error behind, and an earlier error of the caller is left untouched.
template <typename Kernel>
bool cluster_ok(int dev, Kernel kernel, int csize, int threads, const DeviceFacts& facts) {
  if (csize == 1) return true;
  if (facts.major < 9) return false;
  const auto key = std::make_tuple(dev, reinterpret_cast<const void*>(kernel), csize, threads);
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_cluster_ok.find(key);
  if (it != g_cluster_ok.end()) return it->second;
  bool ok = false;
  const bool clean = cudaPeekAtLastError() == cudaSuccess;
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, kernel) == cudaSuccess && attr.binaryVersion >= 90 && attr.ptxVersion >= 90) {
    if (csize > 8) cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute la[1];
    la[0].id = cudaLaunchAttributeClusterDimension;
    la[0].val.clusterDim.x = csize;
    la[0].val.clusterDim.y = 1;
    la[0].val.clusterDim.z = 1;
    cfg.gridDim = dim3(csize);
    cfg.blockDim = dim3(threads);
    cfg.attrs = la;
    cfg.numAttrs = 1;
    int clusters = 0;
    ok = cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) == cudaSuccess && clusters > 0;
  }
  if (clean) (void)cudaGetLastError();  // clears only an error of the queries above
  g_cluster_ok.emplace(key, ok);
  return ok;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Plan {
  bool resident = false;
  int vpt = 1;
  int csize = 1;
  int threads = 32;
  int64_t chunk = 0;
  int64_t nchunks = 0;
};

template <typename T, int VPT>
void* resident_fn(bool vec) {
  return vec ? reinterpret_cast<void*>(&resident_kernel<T, VPT, true>)
             : reinterpret_cast<void*>(&resident_kernel<T, VPT, false>);
}

template <typename T>
void* resident_fn(int vpt, bool vec) {
  switch (vpt) {
    case 1: return resident_fn<T, 1>(vec);
    case 2: return resident_fn<T, 2>(vec);
    default: return resident_fn<T, 4>(vec);
  }
}

// Chooses the path. Resident candidates in order of preference: fewest packs per thread
// (more blocks, more SMs pulling bandwidth), then the smallest cluster that holds the
// sample; cluster size 16 (non-portable) only as the last resort.
template <typename T>
cudaError_t make_plan(int64_t N, bool vec, Plan* plan) {
  constexpr int V = Pack<T>::kVec;
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  DeviceFacts facts;
  err = device_facts(dev, &facts);
  if (err != cudaSuccess) return err;
  const CudaPath mode = static_cast<CudaPath>(g_path.load());
  const bool split_ok = N * static_cast<int64_t>(sizeof(T)) >= kMinSplitBytes;
  const int64_t packs = ceil_div(N, V);
  if (mode != CudaPath::kSplit || !split_ok) {
    const int max_c = mode == CudaPath::kAuto ? kMaxCluster : 1;
    const int cands[][2] = {{1, 1}, {1, 2}, {1, 4}, {1, 8}, {2, 1}, {2, 2}, {2, 4}, {2, 8},
                            {4, 1}, {4, 2}, {4, 4}, {4, 8}, {1, 16}, {2, 16}, {4, 16}};
    for (const auto& cand : cands) {
      const int vpt = cand[0], csize = cand[1];
      if (csize > max_c || static_cast<int64_t>(csize) * kMaxThreads * vpt < packs) continue;
      const int64_t per_block = ceil_div(packs, static_cast<int64_t>(csize) * vpt);
      const int threads = static_cast<int>(ceil_div(per_block > 0 ? per_block : 1, 32) * 32);
      if (!cluster_ok(dev, resident_fn<T>(vpt, vec), csize, threads, facts)) continue;
      plan->resident = true;
      plan->vpt = vpt;
      plan->csize = csize;
      plan->threads = threads;
      return cudaSuccess;
    }
    if (!split_ok) return cudaErrorInvalidConfiguration;  // unreachable: small N always fits
  }
  plan->resident = false;
  plan->threads = kSplitThreads;
  plan->chunk = static_cast<int64_t>(kSplitThreads) * kSplitUnroll * V;
  plan->nchunks = N / plan->chunk > 0 ? N / plan->chunk : 1;  // the last chunk takes the rest
  if (plan->nchunks == 1) plan->chunk = N;
  return cudaSuccess;
}

template <typename T, int VPT>
cudaError_t launch_resident(const KParams& kp, const Plan& plan, bool vec, cudaStream_t stream) {
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute la[1];
  la[0].id = cudaLaunchAttributeClusterDimension;
  la[0].val.clusterDim.x = plan.csize;
  la[0].val.clusterDim.y = 1;
  la[0].val.clusterDim.z = 1;
  cfg.gridDim = dim3(static_cast<unsigned>(kp.B * plan.csize));
  cfg.blockDim = dim3(plan.threads);
  cfg.stream = stream;
  cfg.attrs = la;
  cfg.numAttrs = plan.csize > 1 ? 1 : 0;
  const int csize = plan.csize;
  return vec ? cudaLaunchKernelEx(&cfg, resident_kernel<T, VPT, true>, kp, csize)
             : cudaLaunchKernelEx(&cfg, resident_kernel<T, VPT, false>, kp, csize);
}

// Launch errors come from cudaLaunchKernelEx's return value, never from the thread's
// last-error state (which may hold, or must keep, an unrelated earlier error).
template <typename T, bool kVector>
cudaError_t launch_split(const KParams& kp, const Plan& plan, cudaStream_t stream) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(kp.B * plan.nchunks));
  cfg.blockDim = dim3(kSplitThreads);
  cfg.stream = stream;
  cudaError_t err = cudaLaunchKernelEx(&cfg, partial_kernel<T, kVector>, kp, plan.chunk, plan.nchunks);
  if (err != cudaSuccess) return err;
  cudaLaunchConfig_t fin = cfg;
  fin.gridDim = dim3(static_cast<unsigned>(kp.B));
  err = cudaLaunchKernelEx(&fin, finalize_kernel, kp, plan.chunk, plan.nchunks, static_cast<int>(sizeof(T)));
  if (err != cudaSuccess) return err;
  return cudaLaunchKernelEx(&cfg, write_kernel<T, kVector>, kp, plan.chunk, plan.nchunks);
}

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

template <typename T>
cudaError_t estimate_typed(const EstimateParams& p, cudaStream_t stream) {
  constexpr int V = Pack<T>::kVec;
  const bool vec = p.N % V == 0 && aligned16(p.eps_cond) && aligned16(p.eps_uncond) && aligned16(p.noise) &&
                   aligned16(p.out);
  Plan plan;
  cudaError_t err = make_plan<T>(p.N, vec, &plan);
  if (err != cudaSuccess) return err;
  // Batch slices keep grid.x <= INT_MAX (64-bit maths; one row's blocks must fit a grid).
  const int64_t per_row = plan.resident ? plan.csize : plan.nchunks;
  if (per_row > INT_MAX) return cudaErrorInvalidConfiguration;
  const int64_t max_rows = INT_MAX / per_row;
  for (int64_t b0 = 0; b0 < p.B; b0 += max_rows) {
    const int64_t rows = p.B - b0 < max_rows ? p.B - b0 : max_rows;
    const int64_t offset = b0 * p.N;
    KParams kp;
    kp.c = static_cast<const T*>(p.eps_cond) + offset;
    kp.u = static_cast<const T*>(p.eps_uncond) + offset;
    kp.n = static_cast<const T*>(p.noise) + offset;
    kp.out = static_cast<T*>(p.out) + offset;
    kp.t = p.t ? p.t + b0 : nullptr;
    kp.t_scalar = p.t_scalar;
    kp.stats = p.stats ? p.stats + b0 : nullptr;
    kp.stats_ld = p.B;
    kp.B = rows;
    kp.N = p.N;
    kp.M = p.M;
    if (plan.resident) {
      switch (plan.vpt) {
        case 1: err = launch_resident<T, 1>(kp, plan, vec, stream); break;
        case 2: err = launch_resident<T, 2>(kp, plan, vec, stream); break;
        default: err = launch_resident<T, 4>(kp, plan, vec, stream); break;
      }
    } else {
      err = vec ? launch_split<T, true>(kp, plan, stream) : launch_split<T, false>(kp, plan, stream);
    }
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

thread_local std::string g_plan_text;

}  // namespace

int estimate_cuda(const EstimateParams& p, void* stream) {
  if (p.B < 0 || p.N < 0) return cudaErrorInvalidValue;
  if (p.B == 0) return cudaSuccess;
  if (p.N > 0 && (!p.eps_cond || !p.eps_uncond || !p.noise || !p.out)) return cudaErrorInvalidValue;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case DType::kFloat16: return estimate_typed<__half>(p, st);
    case DType::kBFloat16: return estimate_typed<__nv_bfloat16>(p, st);
    case DType::kFloat32: return estimate_typed<float>(p, st);
    case DType::kFloat64: return estimate_typed<double>(p, st);
  }
  return cudaErrorInvalidValue;
}

const char* cuda_error_message(int code) {
  thread_local std::string text;
  const cudaError_t err = static_cast<cudaError_t>(code);
  text = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
  return text.c_str();
}

int cuda_pointer_device(uintptr_t ptr, int* error) {
  cudaPointerAttributes attr{};
  const bool clean = cudaPeekAtLastError() == cudaSuccess;
  const cudaError_t err = cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(ptr));
  *error = static_cast<int>(err);
  if (clean && err != cudaSuccess) (void)cudaGetLastError();  // only this query's error
  if (err != cudaSuccess) return -1;
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged ? attr.device : -1;
}

int cuda_current_device(int* error) {
  int dev = -1;
  *error = static_cast<int>(cudaGetDevice(&dev));
  return dev;
}

void set_cuda_path(CudaPath path) { g_path.store(static_cast<int>(path)); }

CudaPath get_cuda_path() { return static_cast<CudaPath>(g_path.load()); }

const char* cuda_launch_plan(int64_t N, int dtype, bool aligned, int* error) {
  Plan plan;
  cudaError_t err = cudaErrorInvalidValue;
  int esize = 0;
  switch (static_cast<DType>(dtype)) {
    case DType::kFloat16: err = make_plan<__half>(N, aligned && N % 8 == 0, &plan); esize = 2; break;
    case DType::kBFloat16: err = make_plan<__nv_bfloat16>(N, aligned && N % 8 == 0, &plan); esize = 2; break;
    case DType::kFloat32: err = make_plan<float>(N, aligned && N % 4 == 0, &plan); esize = 4; break;
    case DType::kFloat64: err = make_plan<double>(N, aligned && N % 2 == 0, &plan); esize = 8; break;
  }
  *error = static_cast<int>(err);
  if (err != cudaSuccess) return "";
  const bool vec = aligned && N % (16 / esize) == 0;
  if (plan.resident) {
    g_plan_text = "resident cluster=" + std::to_string(plan.csize) + " vpt=" + std::to_string(plan.vpt) +
                  " threads=" + std::to_string(plan.threads);
  } else {
    g_plan_text = "split chunk=" + std::to_string(plan.chunk) + " nchunks=" + std::to_string(plan.nchunks);
  }
  g_plan_text += vec ? " vec=16B" : " vec=scalar";
  return g_plan_text.c_str();
}

}  // namespace ssd
