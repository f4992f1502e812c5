// Threads and the work split of a CPU call, shared by the kernel (ssd_cpu.cpp) and its
// bandwidth limit pass (ssd_cpu_limit.cpp), so both run the same units on the same threads.
//
// Work is split into fixed units (sample b, chunk of kChunk elements). Threads take whole
// samples (pass 2 right after pass 1, from cache) or, with fewer samples than threads,
// units, pass 2 waiting for every unit of pass 1; work is handed out dynamically. The units
// never depend on the thread count or on which thread runs them.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>

#include "thread_pool.h"

namespace ssd {

constexpr int64_t kChunk = 8192;  // elements per unit; fixes the summation order
// Measured on a 2-core VM: waking a sleeping worker costs ~20-40 us. Below kMinElemsToWake
// elements a call runs on the caller alone; above it helpers are asked for, at most one
// per kMinElemsPerThread elements (sleeping workers) or kMinElemsPerHotThread (polling ones).
constexpr int64_t kMinElemsToWake = 32768;
constexpr int64_t kMinElemsPerThread = 65536;
constexpr int64_t kMinElemsPerHotThread = 8192;

// Threads for a call of `elements` elements in `units` units. Parked workers that still
// poll after the previous call (hot) start at once, so a few chunks per thread are enough;
// sleeping ones are woken only for calls long enough to outlast the wake-up (the caller
// never waits for a helper that arrives after the work is gone, see thread_pool.h).
inline int choose_threads(int requested, int64_t units, int64_t elements) {
  static const int64_t hardware = std::max(1u, std::thread::hardware_concurrency());  // ~5 us a query
  int64_t nt = requested > 0 ? requested : hardware;
  nt = std::min<int64_t>(nt, units);
  if (nt <= 1 || elements < kMinElemsToWake) return 1;
  const int64_t per_thread = ThreadPool::hot(static_cast<int>(nt)) ? kMinElemsPerHotThread : kMinElemsPerThread;
  nt = std::max<int64_t>(2, std::min<int64_t>(nt, elements / per_thread));
  return static_cast<int>(nt);
}

// Runs pass1(unit0, unit1) and pass2(unit0, unit1) over the B * cps units of a call on nt
// threads: whole samples per thread when there are enough of them (pass 2 of a sample right
// after its pass 1), else units in groups of kGrab, pass 2 after every unit's pass 1.
// Threads take the next sample (or group) from a shared counter, so a thread slowed by
// other load does not hold the rest up, and any number of them (the caller alone included)
// completes the job.
template <typename Pass1, typename Pass2>
void run_passes(int64_t B, int64_t cps, int nt, const Pass1& pass1, const Pass2& pass2) {
  const int64_t units = B * cps;
  const bool whole_samples = B % nt == 0 || B >= 8 * nt;  // balanced enough
  std::atomic<int64_t> next_sample{0}, next_unit1{0}, next_unit2{0}, done_unit1{0};
  constexpr int64_t kGrab = 4;
  auto worker = [&](int) {
    if (whole_samples) {
      for (int64_t b; (b = next_sample.fetch_add(1, std::memory_order_relaxed)) < B;) {
        pass1(b * cps, (b + 1) * cps);
        pass2(b * cps, (b + 1) * cps);
      }
      return;
    }
    for (int64_t u0; (u0 = next_unit1.fetch_add(kGrab, std::memory_order_relaxed)) < units;) {
      const int64_t u1 = std::min(units, u0 + kGrab);
      pass1(u0, u1);
      done_unit1.fetch_add(u1 - u0, std::memory_order_release);
    }
    spin_until([&] { return done_unit1.load(std::memory_order_acquire) == units; });  // every partial sum
    for (int64_t u0; (u0 = next_unit2.fetch_add(kGrab, std::memory_order_relaxed)) < units;)
      pass2(u0, std::min(units, u0 + kGrab));
  };
  ThreadPool::run(nt, worker);
}

}  // namespace ssd
