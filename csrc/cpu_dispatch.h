// Run-time choices of a CPU call: which instruction-set variant of the loops runs, and
// whether the output is written with non-temporal (streaming) stores.
//
// The loops are compiled for baseline x86-64 and, through target attributes (no global
// -march flag), for AVX2 + F16C and for AVX-512F; the CPU is asked at run time, so the
// module still runs on a CPU without them. Every variant gives the same bits (ssd_cpu.cpp).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SSD_HAVE_X86_PATHS 1
#define SSD_TARGET_AVX2 __attribute__((target("avx2,f16c")))
#define SSD_TARGET_AVX512 __attribute__((target("avx512f,avx2,f16c")))
#define SSD_AVX2_INLINE inline __attribute__((always_inline, target("avx2,f16c")))
#endif

namespace ssd {

// Instruction sets of the loop variants.
constexpr int kIsaBaseline = 0, kIsaAvx2 = 1, kIsaAvx512 = 2;

// The best variant the CPU runs: AVX-512F (with AVX2 + F16C), else AVX2 + F16C, else
// baseline. SSD_TOOLKIT_CPU_SIMD=0 forces the baseline loops, =avx2 caps at AVX2 (tests).
inline int simd_level() {
#ifdef SSD_HAVE_X86_PATHS
  const char* env = std::getenv("SSD_TOOLKIT_CPU_SIMD");
  const std::string cap = env != nullptr ? env : "";
  if (cap == "0") return kIsaBaseline;
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c"))) return kIsaBaseline;
  if (cap == "avx2" || !__builtin_cpu_supports("avx512f")) return kIsaAvx2;
  return kIsaAvx512;
#else
  return kIsaBaseline;
#endif
}

// Bytes of the last-level cache (Linux sysfs: the highest cache level of cpu0), 32 MiB
// when unknown.
inline int64_t last_level_cache_bytes() {
  static const int64_t bytes = [] {
    int64_t best = 0;
    int best_level = 0;
    for (int i = 0; i < 8; ++i) {
      const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
      int level = 0;
      long long kib = 0;
      char unit = 0;
      FILE* f = std::fopen((dir + "level").c_str(), "r");
      if (f == nullptr) break;
      const bool got_level = std::fscanf(f, "%d", &level) == 1;
      std::fclose(f);
      f = std::fopen((dir + "size").c_str(), "r");
      if (f == nullptr) continue;
      const bool got_size = std::fscanf(f, "%lld%c", &kib, &unit) == 2 && unit == 'K';
      std::fclose(f);
      if (got_level && got_size && level >= best_level) best_level = level, best = kib * 1024;
    }
    return best > 0 ? best : int64_t{32} << 20;
  }();
  return bytes;
}

// True when a call touching `bytes` (3 inputs + the output) should write its output with
// non-temporal stores: the batch does not fit the last-level cache, so cached stores would
// first read each output line and then evict input lines still to be read.
// SSD_TOOLKIT_CPU_STREAM_BYTES=<n> replaces the cache size as the threshold (tests: 0
// streams every call).
inline bool stream_output(int64_t bytes) {
  const char* env = std::getenv("SSD_TOOLKIT_CPU_STREAM_BYTES");
  const int64_t threshold = env != nullptr && *env != '\0' ? std::strtoll(env, nullptr, 10) : last_level_cache_bytes();
  return bytes > threshold;
}

}  // namespace ssd
