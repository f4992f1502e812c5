// Persistent worker threads for the CPU kernel. Starting a std::thread per call costs tens
// of microseconds, as much as the whole kernel on a 2 MB batch; parked workers are reused.
//
// Helpers are optional: a job is written so that any number of participants (the caller
// alone included) completes it, taking work from shared counters. The caller opens n - 1
// helper slots, works, then closes the slots nobody took and waits only for the helpers
// that joined. A worker still waking up (20-40 us on a VM) therefore never delays the
// caller: it finds the slots closed and goes back to polling. After a job, workers poll
// (a pause instruction, a yield now and then) for kSpin before they sleep on a condition variable, so
// back-to-back calls start on all threads at once; hot() tells the kernel whether they do.
#pragma once

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SSD_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define SSD_CPU_RELAX() asm volatile("yield" ::: "memory")
#else
#define SSD_CPU_RELAX() std::atomic_signal_fence(std::memory_order_seq_cst)
#endif

namespace ssd {

// Waits until pred() holds: a short busy poll, then yielding the core (the other threads
// may be descheduled on a loaded machine).
template <typename Pred>
inline void spin_until(Pred pred) {
  for (int i = 0; !pred(); ++i) {
    if (i < 4096) {
      SSD_CPU_RELAX();
    } else {
      std::this_thread::yield();
    }
  }
}

class ThreadPool {
 public:
  // Runs fn(0) on the caller and fn(id) on up to n - 1 helpers that join in time (ids
  // 1..n-1, each at most once); returns when every participant has returned. fn must not
  // throw and must complete the whole job with any number of participants. One caller at a
  // time uses the parked workers; a concurrent caller (another Python thread with the GIL
  // released) gets fresh threads.
  static void run(int n, const std::function<void(int)>& fn) {
    if (n <= 1) {
      fn(0);
      return;
    }
    State& s = state();
    std::unique_lock<std::mutex> owner(s.owner, std::try_to_lock);
    if (!owner.owns_lock()) {
      run_fresh(n, fn);
      return;
    }
    if (s.workers < n - 1) {
      std::lock_guard<std::mutex> lock(s.mu);
      while (s.workers < n - 1) std::thread(worker_loop, &s).detach(), ++s.workers;
    }
    s.caller_cpu.store(current_cpu(), std::memory_order_relaxed);
    s.fn = &fn;
    s.finished.store(0, std::memory_order_relaxed);
    const uint64_t gen = ++s.generation;  // only the owner writes it
    s.ticket.store(pack(gen, n - 1), std::memory_order_seq_cst);  // opens n - 1 slots
    if (s.sleepers.load(std::memory_order_seq_cst) > 0) {
      { std::lock_guard<std::mutex> lock(s.mu); }  // a worker between its check and its wait
      s.work_cv.notify_all();
    }
    fn(0);
    const uint64_t left = s.ticket.exchange(pack(gen, 0), std::memory_order_acq_rel);  // closes the rest
    const int joined = n - 1 - static_cast<int>(left & kSlotMask);
    spin_until([&] { return s.finished.load(std::memory_order_acquire) == joined; });
    s.fn = nullptr;
  }

  // True when at least n - 1 workers are polling now: a job on n threads starts at once.
  static bool hot(int n) { return state().polling.load(std::memory_order_relaxed) >= n - 1; }

 private:
  static constexpr uint64_t kSlotMask = 0xffffffffu;
  static uint64_t pack(uint64_t gen, int slots) { return (gen << 32) | static_cast<uint32_t>(slots); }

  struct State {
    std::mutex owner;  // held by the caller that drives the workers
    std::mutex mu;     // guards the sleep/wake handshake and worker creation
    std::condition_variable work_cv;
    const std::function<void(int)>* fn = nullptr;  // set before the ticket opens
    int workers = 0;                               // threads started
    uint64_t generation = 0;                       // owner only
    std::atomic<uint64_t> ticket{0};               // generation << 32 | open helper slots
    std::atomic<int> finished{0};                  // helpers of this job that have returned
    std::atomic<int> sleepers{0};                  // workers waiting on work_cv
    std::atomic<int> polling{0};                   // workers spinning for the next job
    std::atomic<int> caller_cpu{-1};               // where the last caller ran
  };

  // How long a worker polls for the next job before it sleeps: back-to-back calls then
  // skip the wake-up (tens of microseconds on a VM); idle workers cost nothing after it.
  static constexpr auto kSpin = std::chrono::microseconds(100);

  // Leaked on purpose: detached workers may outlive static destruction. After fork() the
  // child has none of the parent's threads, so it starts from a fresh state.
  static State*& state_ptr() {
    static State* s = [] {
      pthread_atfork(nullptr, nullptr, [] { state_ptr() = new State(); });
      return new State();
    }();
    return s;
  }
  static State& state() { return *state_ptr(); }

  static int current_cpu() {
#if defined(__linux__)
    return sched_getcpu();
#else
    return -2;  // unknown: never equal to the caller's
#endif
  }

  static void worker_loop(State* s) {
    uint64_t seen = 0;  // generations up to this one are done with (or were missed)
    for (;;) {
      uint64_t t = s->ticket.load(std::memory_order_acquire);
      if ((t >> 32) == seen) {
        s->polling.fetch_add(1, std::memory_order_relaxed);
        const auto spin_end = std::chrono::steady_clock::now() + kSpin;
        for (int i = 1; (t >> 32) == seen; ++i) {
          SSD_CPU_RELAX();
          if (i % 64 == 0) {
            // A worker that shares the caller's core (the other one busy) yields, so as not
            // to keep the caller off it; on a core of its own it keeps it (yielding to another
            // program's spinning thread there could cost it a whole time slice).
            if (current_cpu() == s->caller_cpu.load(std::memory_order_relaxed)) std::this_thread::yield();
            if (std::chrono::steady_clock::now() >= spin_end) break;
          }
          t = s->ticket.load(std::memory_order_acquire);
        }
        s->polling.fetch_sub(1, std::memory_order_relaxed);
        if ((t >> 32) == seen) {
          std::unique_lock<std::mutex> lock(s->mu);
          s->sleepers.fetch_add(1, std::memory_order_seq_cst);
          s->work_cv.wait(lock, [&] {
            t = s->ticket.load(std::memory_order_seq_cst);
            return (t >> 32) != seen;
          });
          s->sleepers.fetch_sub(1, std::memory_order_relaxed);
        }
      }
      // Take a slot of the newest job if one is open (a failed exchange reloads t).
      int id = 0;
      while ((t & kSlotMask) != 0) {
        if (s->ticket.compare_exchange_weak(t, t - 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
          id = static_cast<int>(t & kSlotMask);
          break;
        }
      }
      seen = t >> 32;
      if (id == 0) continue;  // closed before this worker got there
      (*s->fn)(id);
      s->finished.fetch_add(1, std::memory_order_release);
    }
  }

  static void run_fresh(int n, const std::function<void(int)>& fn) {
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(n - 1));
    for (int id = 1; id < n; ++id) threads.emplace_back(fn, id);
    fn(0);
    for (auto& th : threads) th.join();
  }
};

}  // namespace ssd
