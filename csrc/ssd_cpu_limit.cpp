// The 3-reads + 1-write pass that bench/bench_cpu.py measures the kernel against
// (ssd_cpu_limit.h).
#include "ssd_cpu_limit.h"

#include <algorithm>
#include <cstring>

#include "cpu_dispatch.h"
#include "cpu_schedule.h"

namespace ssd {
namespace {

// out = a ^ b ^ c over `bytes` bytes (the portable loop, vectorised by the compiler).
void xor3_generic(const unsigned char* a, const unsigned char* b, const unsigned char* c, unsigned char* out,
                  int64_t bytes) {
  int64_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t x, y, z;
    std::memcpy(&x, a + i, 8), std::memcpy(&y, b + i, 8), std::memcpy(&z, c + i, 8);
    x ^= y ^ z;
    std::memcpy(out + i, &x, 8);
  }
  for (; i < bytes; ++i) out[i] = a[i] ^ b[i] ^ c[i];
}

#ifdef SSD_HAVE_X86_PATHS
// 32 bytes a step; streamed stores from the first 32-byte boundary on, as the kernel's.
template <bool kStream>
SSD_TARGET_AVX2 void xor3_avx2(const unsigned char* a, const unsigned char* b, const unsigned char* c,
                               unsigned char* out, int64_t bytes) {
  int64_t i = kStream ? std::min<int64_t>(bytes, (32 - reinterpret_cast<uintptr_t>(out) % 32) % 32) : 0;
  xor3_generic(a, b, c, out, i);
  for (; i + 32 <= bytes; i += 32) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i));
    const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i));
    const __m256i z = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i));
    const __m256i v = _mm256_xor_si256(x, _mm256_xor_si256(y, z));
    if constexpr (kStream) {
      _mm256_stream_si256(reinterpret_cast<__m256i*>(out + i), v);
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), v);
    }
  }
  xor3_generic(a + i, b + i, c + i, out + i, bytes - i);
  if (kStream) _mm_sfence();
}
#endif

}  // namespace

void limit_pass_cpu(const EstimateParams& p, int num_threads) {
  validate_params(p);
  if (p.B == 0) return;
  const int64_t item = item_size(p.dtype);
  const int64_t cps = std::max<int64_t>(1, (p.N + kChunk - 1) / kChunk);
  const auto* a = static_cast<const unsigned char*>(p.eps_cond);
  const auto* b = static_cast<const unsigned char*>(p.eps_uncond);
  const auto* c = static_cast<const unsigned char*>(p.noise);
  auto* out = static_cast<unsigned char*>(p.out);
  auto xor3 = xor3_generic;
#ifdef SSD_HAVE_X86_PATHS
  if (simd_level() >= kIsaAvx2) {
    const bool stream = reinterpret_cast<uintptr_t>(p.out) % item == 0 && stream_output(4 * p.B * p.N * item);
    xor3 = stream ? xor3_avx2<true> : xor3_avx2<false>;
  }
#endif
  auto units = [&](int64_t unit0, int64_t unit1) {
    for (int64_t unit = unit0; unit < unit1; ++unit) {
      const int64_t begin = (unit % cps) * kChunk;
      const int64_t off = ((unit / cps) * p.N + begin) * item;
      xor3(a + off, b + off, c + off, out + off, std::min(kChunk, p.N - begin) * item);
    }
  };
  // Pass 1 of the kernel reads what pass 2 reads again from cache; here one pass does both.
  run_passes(p.B, cps, choose_threads(num_threads, p.B * cps, p.B * p.N), [](int64_t, int64_t) {}, units);
}

}  // namespace ssd
