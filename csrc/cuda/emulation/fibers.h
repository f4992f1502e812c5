// Cooperative fibers for the CUDA emulation: n bodies run round-robin on the calling
// thread, each on its own stack, and give way only where they wait (wait_until). Nothing
// runs concurrently, so a run is deterministic.
#pragma once

#include <cstddef>

namespace ssd_emu {

// Runs body(ctx, i) for i = 0 .. n-1 as fibers until every one has returned. Rethrows the
// first exception a body throws (the other fibers are abandoned). Throws
// std::runtime_error when every live fiber waits and none can go on (a deadlock: a
// barrier or shuffle that not every thread reaches).
void run_fibers(int n, void (*body)(void* ctx, int i), void* ctx);

// Index of the running fiber (only inside run_fibers).
int current_fiber();

// Lets the other fibers run once; counts towards deadlock detection until note_progress().
void yield_waiting();
// The running fiber got past a wait.
void note_progress();

// Gives way to the other fibers until cond() holds.
template <class Cond>
void wait_until(Cond&& cond) {
  while (!cond()) yield_waiting();
  note_progress();
}

}  // namespace ssd_emu
