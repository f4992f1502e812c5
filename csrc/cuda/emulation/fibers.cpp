// Fiber switching for the CUDA emulation (fibers.h). x86-64: a 16-line context switch
// (callee-saved registers, MXCSR, x87 control word); elsewhere ucontext (slower: a
// signal-mask system call per switch). Under
// AddressSanitizer every switch is announced (__sanitizer_*_switch_fiber) and a reused
// stack is unpoisoned.
#include "fibers.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define SSD_EMU_ASAN 1
#endif

#if defined(__x86_64__) && !defined(SSD_EMU_UCONTEXT)  // -DSSD_EMU_UCONTEXT: test the portable path
#define SSD_EMU_X86_SWITCH 1
extern "C" void ssd_emu_swap(void** save_sp, void* load_sp);
extern "C" void ssd_emu_trampoline();
asm(R"(
  .text
  .globl ssd_emu_swap
  .hidden ssd_emu_swap
  .type ssd_emu_swap, @function
ssd_emu_swap:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size ssd_emu_swap, .-ssd_emu_swap

  .globl ssd_emu_trampoline
  .hidden ssd_emu_trampoline
  .type ssd_emu_trampoline, @function
ssd_emu_trampoline:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size ssd_emu_trampoline, .-ssd_emu_trampoline
)");
#else
#include <ucontext.h>
#endif

namespace ssd_emu {
namespace {

#if defined(SSD_EMU_ASAN)
constexpr size_t kStackBytes = 512 * 1024;  // ASan frames carry redzones
#else
constexpr size_t kStackBytes = 128 * 1024;  // virtual; pages are committed on first touch
#endif

struct Stack {
  char* base = nullptr;  // lowest address; the first page is a guard page
  size_t size = 0;
};

Stack new_stack() {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* mem = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw std::runtime_error("emulation: mmap of a fiber stack failed");
  mprotect(mem, page, PROT_NONE);
  return Stack{static_cast<char*>(mem), kStackBytes};
}

struct Context {
#if defined(SSD_EMU_X86_SWITCH)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

struct Fiber {
  Context ctx;
  Stack stack;
  bool done = false;
  void* fake_stack = nullptr;  // ASan's fake stack of this fiber while it is switched out
};

struct Run {
  std::vector<Fiber> fibers;
  Context main;
  const void* main_bottom = nullptr;
  size_t main_size = 0;
  void* main_fake_stack = nullptr;
  void (*body)(void*, int) = nullptr;
  void* body_ctx = nullptr;
  int current = -1;
  int live = 0;
  bool progressed = false;  // the running fiber did more than re-check a wait
  std::exception_ptr error;
};

thread_local Run* g_run = nullptr;
thread_local std::vector<Stack> g_stacks;  // reused across runs

void switch_context(Context& from, Context& to, const Stack* to_stack, void** save_fake, bool from_dies) {
#if defined(SSD_EMU_ASAN)
  Run& r = *g_run;
  const void* bottom = to_stack ? to_stack->base : r.main_bottom;
  const size_t size = to_stack ? to_stack->size : r.main_size;
  __sanitizer_start_switch_fiber(from_dies ? nullptr : save_fake, bottom, size);
#else
  (void)to_stack;
  (void)save_fake;
  (void)from_dies;
#endif
#if defined(SSD_EMU_X86_SWITCH)
  ssd_emu_swap(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

// Where a switch lands: `fake` is the landing side's saved fake stack. A fiber always
// comes from the main context, whose stack bounds it records for the way back.
void finish_switch(void* fake, bool in_fiber) {
#if defined(SSD_EMU_ASAN)
  const void* bottom = nullptr;
  size_t size = 0;
  __sanitizer_finish_switch_fiber(fake, &bottom, &size);
  if (in_fiber) {
    g_run->main_bottom = bottom;
    g_run->main_size = size;
  }
#else
  (void)fake;
  (void)in_fiber;
#endif
}

void fiber_main(void*) {
  Run& r = *g_run;
  finish_switch(nullptr, true);
  const int i = r.current;
  try {
    r.body(r.body_ctx, i);
  } catch (...) {
    if (!r.error) r.error = std::current_exception();
  }
  r.fibers[i].done = true;
  --r.live;
  r.progressed = true;
  switch_context(r.fibers[i].ctx, r.main, nullptr, nullptr, true);
}

#if !defined(SSD_EMU_X86_SWITCH)
void fiber_main_uc() { fiber_main(nullptr); }
#endif

void start_fiber(Fiber& f) {
  char* top = f.stack.base + f.stack.size;
#if defined(SSD_EMU_ASAN)
  __asan_unpoison_memory_region(f.stack.base + 4096, f.stack.size - 4096);
#endif
#if defined(SSD_EMU_X86_SWITCH)
  auto* sp = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(top) & ~uintptr_t{15}) - 80);
  uint32_t mxcsr = __builtin_ia32_stmxcsr();
  uint64_t fpu = 0x037f;
  sp[0] = mxcsr | (fpu << 32);
  sp[1] = sp[2] = 0;                                        // r15, r14
  sp[3] = reinterpret_cast<uint64_t>(&fiber_main);          // r13: entry
  sp[4] = 0;                                                // r12: its argument
  sp[5] = sp[6] = 0;                                        // rbx, rbp
  sp[7] = reinterpret_cast<uint64_t>(&ssd_emu_trampoline);  // return address
  f.ctx.sp = sp;
#else
  getcontext(&f.ctx.uc);
  f.ctx.uc.uc_stack.ss_sp = f.stack.base + 4096;
  f.ctx.uc.uc_stack.ss_size = f.stack.size - 4096;
  f.ctx.uc.uc_link = nullptr;
  makecontext(&f.ctx.uc, fiber_main_uc, 0);
  (void)top;
#endif
}

}  // namespace

int current_fiber() { return g_run ? g_run->current : -1; }

void note_progress() {
  if (g_run) g_run->progressed = true;
}

void yield_waiting() {
  Run& r = *g_run;
  Fiber& f = r.fibers[r.current];
  switch_context(f.ctx, r.main, nullptr, &f.fake_stack, false);
  finish_switch(f.fake_stack, true);
}

void run_fibers(int n, void (*body)(void* ctx, int i), void* ctx, int group, Order order, unsigned long long seed) {
  const bool reverse = order == Order::kReverse;
  if (group < 1 || n % group != 0) throw std::logic_error("emulation: fiber groups must divide the fibers");
  if (g_run) throw std::logic_error("emulation: run_fibers is not reentrant");
  Run r;
  r.body = body;
  r.body_ctx = ctx;
  r.fibers.resize(static_cast<size_t>(n));
  while (g_stacks.size() < r.fibers.size()) g_stacks.push_back(new_stack());
  for (int i = 0; i < n; ++i) {
    r.fibers[i].stack = g_stacks[i];
    start_fiber(r.fibers[i]);
  }
  r.live = n;
  g_run = &r;
  // Cycles over the groups; each group runs (its fibers round-robin) until a pass over it
  // changes nothing. A cycle in which no group changed anything is a deadlock.
  const int groups = n / group;
  std::vector<int> perm(static_cast<size_t>(group));
  for (int k = 0; k < group; ++k) perm[k] = reverse ? group - 1 - k : k;
  uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;  // xorshift64*, never 0
  const auto next = [&rng] {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
  };
  bool deadlock = false;
  while (r.live > 0 && !r.error && !deadlock) {
    bool cycle_progressed = false;
    for (int g = 0; g < groups && !r.error; ++g) {
      const int first = (reverse ? groups - 1 - g : g) * group;
      for (bool pass_progressed = true; pass_progressed && !r.error;) {
        pass_progressed = false;
        if (order == Order::kShuffle)  // Fisher-Yates
          for (int k = group - 1; k > 0; --k) std::swap(perm[k], perm[static_cast<int>(next() % (k + 1))]);
        for (int k = 0; k < group && !r.error; ++k) {
          const int i = first + perm[k];
          if (r.fibers[i].done) continue;
          r.current = i;
          r.progressed = false;
          switch_context(r.main, r.fibers[i].ctx, &r.fibers[i].stack, &r.main_fake_stack, false);
          finish_switch(r.main_fake_stack, false);
          pass_progressed = pass_progressed || r.progressed;
        }
        cycle_progressed = cycle_progressed || pass_progressed;
      }
    }
    deadlock = r.live > 0 && !cycle_progressed;
  }
  r.current = -1;
  g_run = nullptr;
  if (r.error) std::rethrow_exception(r.error);
  if (deadlock)
    throw std::runtime_error("emulation: deadlock: " + std::to_string(r.live) +
                             " threads wait at a barrier or shuffle that the others of their block, warp or cluster "
                             "never reach");
}

}  // namespace ssd_emu
