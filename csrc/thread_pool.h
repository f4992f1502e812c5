// Persistent worker threads for the CPU kernel. Starting a std::thread per call costs tens
// of microseconds, as much as the whole kernel on a 2 MB batch; parked workers are woken
// through a condition variable instead.
#pragma once

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ssd {

class ThreadPool {
 public:
  // Runs fn(0), ..., fn(n - 1) on n threads, the caller being thread 0, and returns when
  // all have returned. fn must not throw. One caller at a time uses the parked workers; a
  // concurrent caller (another Python thread with the GIL released) gets fresh threads.
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
    {
      std::lock_guard<std::mutex> lock(s.mu);
      while (static_cast<int>(s.workers) < n - 1) {
        std::thread(worker_loop, &s, static_cast<int>(++s.workers)).detach();
      }
      s.fn = &fn;
      s.active = n - 1;
      s.pending = n - 1;
      s.generation.store(s.generation.load() + 1, std::memory_order_release);
    }
    s.work_cv.notify_all();
    fn(0);
    std::unique_lock<std::mutex> lock(s.mu);
    s.done_cv.wait(lock, [&s] { return s.pending == 0; });
    s.fn = nullptr;
  }

 private:
  struct State {
    std::mutex owner;  // held by the caller that drives the workers
    std::mutex mu;     // guards everything below
    std::condition_variable work_cv, done_cv;
    const std::function<void(int)>* fn = nullptr;
    int workers = 0;  // parked threads, ids 1..workers
    int active = 0;   // ids 1..active take part in the current generation
    int pending = 0;  // of those, how many have not finished
    std::atomic<uint64_t> generation{0};  // written under mu; read by spinning workers
  };

  // A worker polls this long for the next job before it sleeps: back-to-back calls then
  // skip the wake-up (tens of microseconds on a VM), idle workers cost nothing after it.
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

  static void worker_loop(State* s, int id) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(s->mu);
    for (;;) {
      lock.unlock();
      const auto spin_end = std::chrono::steady_clock::now() + kSpin;
      while (s->generation.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_end) {
        std::this_thread::yield();
      }
      lock.lock();
      s->work_cv.wait(lock, [&] { return s->generation.load() != seen; });
      seen = s->generation.load();
      if (id > s->active) continue;
      const std::function<void(int)>* fn = s->fn;
      lock.unlock();
      (*fn)(id);
      lock.lock();
      if (--s->pending == 0) s->done_cv.notify_one();
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
