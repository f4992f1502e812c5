// The machine's limit for the CPU kernel's traffic, for bench/bench_cpu.py.
#pragma once

#include "ssd_core.h"

namespace ssd {

// out = eps_cond ^ eps_uncond ^ noise, bytewise: the kernel's 3 reads + 1 write over the
// same bytes, the same units on the same threads (cpu_schedule.h), the same store policy
// (non-temporal stores past the last-level cache), and next to no arithmetic. Only the
// pointers, B, N and dtype of `p` are used; validated like the kernel.
void limit_pass_cpu(const EstimateParams& p, int num_threads);

}  // namespace ssd
