// Cooperative fibers for the CUDA emulation: n bodies run round-robin on the calling
// thread, each on its own stack, and give way only where they wait (wait_until). Nothing
// runs concurrently, so a run is deterministic.
#pragma once

#include <cstddef>

namespace ssd_emu {

// The order in which run_fibers resumes fibers.
enum class Order : int {
  kForward = 0,  // groups and the fibers in them first to last
  kReverse = 1,  // last to first
  kShuffle = 2,  // groups first to last, the fibers in a group in a fresh pseudo-random
                 // order on every pass (seeded: a run is still deterministic)
};

// Runs body(ctx, i) for i = 0 .. n-1 as fibers until every one has returned. The fibers
// form groups of `group` consecutive ones; each group in turn runs, round-robin in `order`,
// until none of its fibers can go on, then the next group. (group = n: plain round-robin
// over all.) Rethrows the first exception a body throws (the other fibers are abandoned).
// Throws std::runtime_error when every live fiber waits and none can go on (a deadlock: a
// barrier or shuffle that not every thread reaches).
void run_fibers(int n, void (*body)(void* ctx, int i), void* ctx, int group, Order order, unsigned long long seed);

// Index of the running fiber (only inside run_fibers).
int current_fiber();

// Lets the other fibers run; the caller re-checks its wait when resumed.
void yield_waiting();
// The running fiber did work (anything but re-checking a wait that still holds it).
void note_progress();

// Gives way to the other fibers until cond() holds.
template <class Cond>
void wait_until(Cond&& cond) {
  note_progress();  // the work up to this wait (an arrival, a store)
  while (!cond()) yield_waiting();
  note_progress();
}

}  // namespace ssd_emu
