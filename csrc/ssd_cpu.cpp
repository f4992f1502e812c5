// CPU kernel of the SSD estimator: one reading sweep forms the four per-sample sums, one
// sweep writes the output.
//
// Work is split into fixed units (sample b, chunk of kChunk elements). Pass 1 gives each
// unit its partial sums; pass 2 reduces a sample's partials in chunk order and writes the
// unit's output. Threads take whole samples (pass 2 right after pass 1, from cache) or,
// with fewer samples than threads, ranges of units with a barrier between the passes.
// The units never depend on the thread count, so the result is bitwise the same for any
// num_threads. Sums accumulate in float64 over kLanes
// independent lanes (vectorisable without reassociation), reduced by a fixed tree.
// On x86-64 the loops are compiled twice, baseline and AVX2, chosen at run time; with
// -ffp-contract=off both perform the same IEEE operations, so both give the same bits.
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "half_convert.h"
#include "ssd_core.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define SSD_HAVE_AVX2_PATH 1
#define SSD_TARGET_AVX2 __attribute__((target("avx2")))
#endif

namespace ssd {
namespace {

constexpr int64_t kChunk = 8192;               // elements per unit; fixes the summation order
constexpr int kLanes = 8;                      // independent accumulators per sum
constexpr int64_t kMinElemsPerThread = 32768;  // below this, another thread costs more than it saves

struct Sums {
  double hh, cc, cn, nn;
};

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

// Io<T>: loads as `Narrow` (float, or double for double inputs) and stores.
template <typename T>
struct Io;

template <>
struct Io<float> {
  using Narrow = float;
  static SSD_INLINE float load(const float* p, int64_t i) { return p[i]; }
  static SSD_INLINE void store(float* p, int64_t i, float v) { p[i] = v; }
  static SSD_INLINE void store_wide(float* p, int64_t i, double v) { p[i] = static_cast<float>(v); }
};

template <>
struct Io<double> {
  using Narrow = double;
  static SSD_INLINE double load(const double* p, int64_t i) { return p[i]; }
  static SSD_INLINE void store(double* p, int64_t i, double v) { p[i] = v; }
  static SSD_INLINE void store_wide(double* p, int64_t i, double v) { p[i] = v; }
};

template <>
struct Io<Half> {
  using Narrow = float;
  static SSD_INLINE float load(const Half* p, int64_t i) { return half_to_float(p[i].bits); }
  static SSD_INLINE void store(Half* p, int64_t i, float v) { p[i].bits = float_to_half(v); }
  static SSD_INLINE void store_wide(Half* p, int64_t i, double v) { store(p, i, static_cast<float>(v)); }
};

template <>
struct Io<BFloat16> {
  using Narrow = float;
  static SSD_INLINE float load(const BFloat16* p, int64_t i) { return bfloat16_to_float(p[i].bits); }
  static SSD_INLINE void store(BFloat16* p, int64_t i, float v) { p[i].bits = float_to_bfloat16(v); }
  static SSD_INLINE void store_wide(BFloat16* p, int64_t i, double v) { store(p, i, static_cast<float>(v)); }
};

SSD_INLINE double lane_tree(const double* a) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// The four sums over `len` elements of one chunk.
template <typename T>
SSD_INLINE Sums chunk_sums(const T* __restrict c, const T* __restrict u, const T* __restrict n, int64_t len) {
  double hh[kLanes] = {}, cc[kLanes] = {}, cn[kLanes] = {}, nn[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const double cv = Io<T>::load(c, i + k), uv = Io<T>::load(u, i + k), nv = Io<T>::load(n, i + k);
      const double hv = cv - uv;
      hh[k] += hv * hv;
      cc[k] += cv * cv;
      cn[k] += cv * nv;
      nn[k] += nv * nv;
    }
  }
  for (int k = 0; i < len; ++i, ++k) {
    const double cv = Io<T>::load(c, i), uv = Io<T>::load(u, i), nv = Io<T>::load(n, i);
    const double hv = cv - uv;
    hh[k] += hv * hv;
    cc[k] += cv * cv;
    cn[k] += cv * nv;
    nn[k] += nv * nv;
  }
  return {lane_tree(hh), lane_tree(cc), lane_tree(cn), lane_tree(nn)};
}

// t_b > M: E = c - u, in float for half types (rounded once) and in the input dtype otherwise.
template <typename T>
SSD_INLINE void chunk_write_h(const T* __restrict c, const T* __restrict u, T* __restrict out, int64_t len) {
  for (int64_t i = 0; i < len; ++i) Io<T>::store(out, i, Io<T>::load(c, i) - Io<T>::load(u, i));
}

// t_b <= M: E = scale * (c - r * n), in float64, rounded once.
template <typename T>
SSD_INLINE void chunk_write_rescaled(const T* __restrict c, const T* __restrict n, T* __restrict out, int64_t len,
                                     double r, double scale) {
  for (int64_t i = 0; i < len; ++i) {
    const double et = static_cast<double>(Io<T>::load(c, i)) - r * static_cast<double>(Io<T>::load(n, i));
    Io<T>::store_wide(out, i, scale * et);
  }
}

// Per-sample coefficients, operation for operation as reference.coefficients().
struct Coefficients {
  double stats[kNumStats];  // r, h_norm, eps_tilde_norm, eps_cond_norm, noise_norm, scale
  double output_scale;      // scale, or NaN when a sum is not finite
};

Coefficients coefficients(const Sums& s) {
  const bool has_noise = s.nn > 0;
  const double r = has_noise ? s.cn / s.nn : 0.0;
  double et2 = has_noise ? s.cc - s.cn * s.cn / s.nn : s.cc;
  if (!(et2 > 0) && !std::isnan(et2)) et2 = 0.0;
  const bool degenerate = et2 <= kCollinearRtol2 * s.cc;
  const double scale = degenerate ? 0.0 : std::sqrt(s.hh) / std::sqrt(et2);
  const bool finite = std::isfinite(s.hh) && std::isfinite(s.cc) && std::isfinite(s.cn) && std::isfinite(s.nn);
  Coefficients k{{r, std::sqrt(s.hh), std::sqrt(et2), std::sqrt(s.cc), std::sqrt(s.nn), scale},
                 finite ? scale : std::numeric_limits<double>::quiet_NaN()};
  return k;
}

// A reusable barrier for a fixed number of threads (C++17 has none).
class Barrier {
 public:
  explicit Barrier(int count) : count_(count), waiting_(0) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mu_);
    if (++waiting_ == count_) {
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [this] { return waiting_ == count_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  const int count_;
  int waiting_;
};

template <typename T>
struct Job {
  const T* c;
  const T* u;
  const T* n;
  T* out;
  const EstimateParams* p;
  int64_t chunks_per_sample;
  Sums* partials;  // [B * chunks_per_sample]
};

template <typename T>
SSD_INLINE void pass1_body(const Job<T>& job, int64_t unit0, int64_t unit1) {
  const int64_t N = job.p->N, cps = job.chunks_per_sample;
  for (int64_t unit = unit0; unit < unit1; ++unit) {
    const int64_t b = unit / cps, begin = (unit % cps) * kChunk;
    const int64_t len = std::min(kChunk, N - begin);
    const int64_t off = b * N + begin;
    job.partials[unit] = chunk_sums<T>(job.c + off, job.u + off, job.n + off, len);
  }
}

template <typename T>
SSD_INLINE void pass2_body(const Job<T>& job, int64_t unit0, int64_t unit1) {
  const EstimateParams& p = *job.p;
  const int64_t N = p.N, cps = job.chunks_per_sample;
  for (int64_t unit = unit0; unit < unit1; ++unit) {
    const int64_t b = unit / cps, chunk = unit % cps, begin = chunk * kChunk;
    const int64_t len = std::min(kChunk, N - begin);
    const int64_t off = b * N + begin;
    const bool mode_seeking = (p.t ? p.t[b] : p.t_scalar) <= p.M;  // a NaN t gives h, as in the reference
    if (!mode_seeking) chunk_write_h<T>(job.c + off, job.u + off, job.out + off, len);
    if (mode_seeking || (chunk == 0 && p.stats != nullptr)) {  // the sample's sums are needed
      Sums s{0, 0, 0, 0};
      for (int64_t j = 0; j < cps; ++j) {  // fixed order: the same bits for any thread count
        const Sums& q = job.partials[b * cps + j];
        s.hh += q.hh;
        s.cc += q.cc;
        s.cn += q.cn;
        s.nn += q.nn;
      }
      const Coefficients k = coefficients(s);
      if (chunk == 0 && p.stats != nullptr)
        for (int i = 0; i < kNumStats; ++i) p.stats[i * p.B + b] = k.stats[i];
      if (mode_seeking) chunk_write_rescaled<T>(job.c + off, job.n + off, job.out + off, len, k.stats[0], k.output_scale);
    }
  }
}

template <typename T>
void pass1_generic(const Job<T>& job, int64_t u0, int64_t u1) {
  pass1_body<T>(job, u0, u1);
}
template <typename T>
void pass2_generic(const Job<T>& job, int64_t u0, int64_t u1) {
  pass2_body<T>(job, u0, u1);
}
#ifdef SSD_HAVE_AVX2_PATH
template <typename T>
SSD_TARGET_AVX2 void pass1_avx2(const Job<T>& job, int64_t u0, int64_t u1) {
  pass1_body<T>(job, u0, u1);
}
template <typename T>
SSD_TARGET_AVX2 void pass2_avx2(const Job<T>& job, int64_t u0, int64_t u1) {
  pass2_body<T>(job, u0, u1);
}
#endif

// AVX2 when the CPU has it, unless SSD_TOOLKIT_CPU_SIMD=0 (the baseline path, for tests).
bool use_avx2() {
#ifdef SSD_HAVE_AVX2_PATH
  const char* env = std::getenv("SSD_TOOLKIT_CPU_SIMD");
  if (env != nullptr && std::string(env) == "0") return false;
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

int choose_threads(int requested, int64_t units, int64_t elements) {
  int64_t nt = requested > 0 ? requested : static_cast<int64_t>(std::thread::hardware_concurrency());
  nt = std::max<int64_t>(1, std::min<int64_t>({nt, units, elements / kMinElemsPerThread}));
  return static_cast<int>(nt);
}

template <typename T>
void run(const EstimateParams& p, int num_threads) {
  Job<T> job;
  job.c = static_cast<const T*>(p.eps_cond);
  job.u = static_cast<const T*>(p.eps_uncond);
  job.n = static_cast<const T*>(p.noise);
  job.out = static_cast<T*>(p.out);
  job.p = &p;
  job.chunks_per_sample = std::max<int64_t>(1, (p.N + kChunk - 1) / kChunk);
  const int64_t units = p.B * job.chunks_per_sample;
  std::vector<Sums> partials(static_cast<size_t>(units));
  job.partials = partials.data();

  auto pass1 = pass1_generic<T>;
  auto pass2 = pass2_generic<T>;
#ifdef SSD_HAVE_AVX2_PATH
  if (use_avx2()) {
    pass1 = pass1_avx2<T>;
    pass2 = pass2_avx2<T>;
  }
#endif
  const int64_t cps = job.chunks_per_sample;
  const int nt = choose_threads(num_threads, units, p.B * p.N);
  // Whole samples per thread when there are enough of them: pass 2 re-reads a sample
  // right after pass 1, from cache. Otherwise units per thread with a barrier between the
  // passes. Both give the same partial sums, reduced in the same order: the same bits.
  const bool whole_samples = p.B % nt == 0 || p.B >= 8 * nt;  // balanced enough
  Barrier barrier(nt);
  auto worker = [&](int tid) {
    if (whole_samples) {
      for (int64_t b = p.B * tid / nt; b < p.B * (tid + 1) / nt; ++b) {
        pass1(job, b * cps, (b + 1) * cps);
        pass2(job, b * cps, (b + 1) * cps);
      }
      return;
    }
    const int64_t u0 = units * tid / nt, u1 = units * (tid + 1) / nt;
    pass1(job, u0, u1);
    barrier.wait();
    pass2(job, u0, u1);
  };
  if (nt == 1) {
    worker(0);
    return;
  }
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(nt - 1));
  for (int tid = 1; tid < nt; ++tid) threads.emplace_back(worker, tid);
  worker(0);
  for (auto& th : threads) th.join();
}

}  // namespace

DType dtype_from_name(const char* name) {
  const std::string s = name ? name : "";
  if (s == "float16") return DType::kFloat16;
  if (s == "bfloat16") return DType::kBFloat16;
  if (s == "float32") return DType::kFloat32;
  if (s == "float64") return DType::kFloat64;
  throw std::invalid_argument("dtype: expected one of 'float16', 'bfloat16', 'float32', 'float64', got '" + s + "'");
}

void validate_params(const EstimateParams& p) {
  if (p.B < 0) throw std::invalid_argument("B: expected >= 0, got " + std::to_string(p.B));
  if (p.N < 0) throw std::invalid_argument("N: expected >= 0, got " + std::to_string(p.N));
  const int d = static_cast<int>(p.dtype);
  if (d < 0 || d > 3) throw std::invalid_argument("dtype: expected a DType value 0..3, got " + std::to_string(d));
  if (p.B > 0 && p.N > 0) {
    const char* names[] = {"eps_cond", "eps_uncond", "noise", "out"};
    const void* ptrs[] = {p.eps_cond, p.eps_uncond, p.noise, p.out};
    for (int i = 0; i < 4; ++i)
      if (ptrs[i] == nullptr) throw std::invalid_argument(std::string(names[i]) + ": expected a data pointer, got null");
  }
}

void estimate_cpu(const EstimateParams& p, int num_threads) {
  validate_params(p);
  if (p.B == 0) return;
  switch (p.dtype) {
    case DType::kFloat16: run<Half>(p, num_threads); break;
    case DType::kBFloat16: run<BFloat16>(p, num_threads); break;
    case DType::kFloat32: run<float>(p, num_threads); break;
    case DType::kFloat64: run<double>(p, num_threads); break;
  }
}

}  // namespace ssd
