// Host side of a CUDA estimate: plan, cluster checks and launches, written once over a
// runtime `Rt` (the CUDA runtime in ssd_cuda.cu, the pretend device of the emulation in
// emulation/emulated_module.cpp). Included after ssd_kernels.cuh, in the same namespace
// (the emulation includes both once per emulated architecture; hence no include guard).
//
// Rt provides:
//   DeviceFacts facts();                        major, sms, max_grid_x of the current device
//   CudaPath path(); int forced_cluster();      the test switches (auto / 0 in production)
//   int peek_last_error(); void clear_last_error();
//   bool kernel_versions(const void* kernel, int* binary, int* ptx);    false: query failed
//   int max_active_clusters(const void* kernel, int csize, int threads); <= 0: no / failed
//   template <class F> bool cached(const void* kernel, int csize, int threads, F compute);
//   Variant variant();                          launch-plan variant (ssd_launch_plan.h)
//   template <class... P, class... A>
//   int launch(void (*kernel)(P...), int64_t grid, int threads, int csize, A... args);
//                                               0, or the launch's error (never the last-error state)
//   [[noreturn]] void launch_failed(int err);   throws the runtime's exception naming err
// Errors: std::invalid_argument for bad parameters, the runtime's exception for failures.

#include <string>

namespace ssd {
namespace SSD_KERNEL_NAMESPACE {

// Whether `kernel` can run as clusters of `csize` blocks of `threads`: the device is
// sm_90+, the kernel's code holds the cluster code (cluster_code_compiled), and at least
// one such cluster fits. A refused query leaves no error behind, and an error the caller
// had before is left for the caller (cleared only when the state was clean).
template <class Rt>
bool cluster_ok(Rt& rt, const void* kernel, int csize, int threads) {
  if (rt.facts().major < 9) return false;
  return rt.cached(kernel, csize, threads, [&] {
    const bool clean = rt.peek_last_error() == 0;
    int binary = 0, ptx = 0;
    const bool ok = rt.kernel_versions(kernel, &binary, &ptx) && cluster_code_compiled(binary, ptx) &&
                    rt.max_active_clusters(kernel, csize, threads) > 0;
    if (clean) rt.clear_last_error();
    return ok;
  });
}

template <typename T, int VPT>
const void* resident_kernel_ptr(bool vec) {
  return vec ? reinterpret_cast<const void*>(&resident_kernel<T, VPT, true>)
             : reinterpret_cast<const void*>(&resident_kernel<T, VPT, false>);
}

template <typename T>
const void* resident_kernel_ptr(int vpt, bool vec) {
  switch (vpt) {
    case 1: return resident_kernel_ptr<T, 1>(vec);
    case 2: return resident_kernel_ptr<T, 2>(vec);
    default: return resident_kernel_ptr<T, 4>(vec);
  }
}

template <class Rt, typename T>
Plan plan_for(Rt& rt, int64_t N, bool vec) {
  return make_plan(
      N, sizeof(T), rt.path(), rt.forced_cluster(),
      [&](int vpt, int csize, int threads) { return cluster_ok(rt, resident_kernel_ptr<T>(vpt, vec), csize, threads); },
      rt.variant());
}

// One launch; a failed one throws, and its error is cleared from the thread's last-error
// state when that state was clean before (else the next, unrelated, launch check of the
// caller's framework would report it), while an error the caller already had is left.
template <class Rt, typename... P, typename... A>
void launch_checked(Rt& rt, void (*kernel)(P...), int64_t grid, int threads, int csize, A... args) {
  const bool clean = rt.peek_last_error() == 0;
  const int err = rt.launch(kernel, grid, threads, csize, args...);
  if (err != 0) {
    if (clean) rt.clear_last_error();
    rt.launch_failed(err);
  }
}

inline bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

// 16-byte vector access: all four arrays 16-byte aligned and N a multiple of the pack
// width (then every row is aligned).
inline bool vector_access(const EstimateParams& p, int esize) {
  return p.N % pack_elems(esize) == 0 && aligned16(p.eps_cond) && aligned16(p.eps_uncond) &&
         aligned16(p.noise) && aligned16(p.out);
}

template <class Rt, typename T, int VPT>
void launch_resident(Rt& rt, const EstimateParams& p, const Plan& plan, bool vec, int64_t b0, int64_t rows) {
  const int64_t grid = rows * plan.csize;
  const int relaxed = plan.relaxed_arrive ? 1 : 0;
  if (vec) {
    launch_checked(rt, &resident_kernel<T, VPT, true>, grid, plan.threads, plan.csize, p, b0, plan.csize, relaxed);
  } else {
    launch_checked(rt, &resident_kernel<T, VPT, false>, grid, plan.threads, plan.csize, p, b0, plan.csize, relaxed);
  }
}

template <class Rt, typename T, bool kVector>
void launch_split(Rt& rt, const EstimateParams& p, const Plan& plan, int64_t b0, int64_t rows) {
  const int64_t grid = rows * plan.nchunks;
  launch_checked(rt, &partial_kernel<T, kVector>, grid, kSplitThreads, 1, p, b0, plan.chunk, plan.nchunks);
  launch_checked(rt, &finalize_kernel, rows, kSplitThreads, 1, p, b0, plan.chunk, plan.nchunks,
                 static_cast<int>(sizeof(T)));
  launch_checked(rt, &write_kernel<T, kVector>, grid, kSplitThreads, 1, p, b0, plan.chunk, plan.nchunks);
}

template <class Rt, typename T>
void estimate_typed(Rt& rt, const EstimateParams& p) {
  const bool vec = vector_access(p, sizeof(T));
  const Plan plan = plan_for<Rt, T>(rt, p.N, vec);
  const int64_t max_rows = rows_per_launch(plan.blocks_per_sample(), rt.facts().max_grid_x);
  for (int64_t b0 = 0; b0 < p.B; b0 += max_rows) {  // batch slices: grid.x <= max_grid_x
    const int64_t rows = p.B - b0 < max_rows ? p.B - b0 : max_rows;
    if (plan.resident) {
      switch (plan.vpt) {
        case 1: launch_resident<Rt, T, 1>(rt, p, plan, vec, b0, rows); break;
        case 2: launch_resident<Rt, T, 2>(rt, p, plan, vec, b0, rows); break;
        default: launch_resident<Rt, T, 4>(rt, p, plan, vec, b0, rows); break;
      }
    } else if (vec) {
      launch_split<Rt, T, true>(rt, p, plan, b0, rows);
    } else {
      launch_split<Rt, T, false>(rt, p, plan, b0, rows);
    }
  }
}

// The estimate on the runtime's device; p is validated first (ValueError material),
// alignment included: a misaligned element access would end the CUDA context.
template <class Rt>
void estimate_with(Rt& rt, const EstimateParams& p) {
  validate_params(p);
  validate_alignment(p);
  if (p.B == 0) return;
  switch (p.dtype) {
    case DType::kFloat16: estimate_typed<Rt, __half>(rt, p); break;
    case DType::kBFloat16: estimate_typed<Rt, __nv_bfloat16>(rt, p); break;
    case DType::kFloat32: estimate_typed<Rt, float>(rt, p); break;
    case DType::kFloat64: estimate_typed<Rt, double>(rt, p); break;
  }
}

// The plan estimate_with would use for samples of N elements, as text (Plan::describe).
template <class Rt>
std::string plan_text(Rt& rt, int64_t N, DType dtype, bool aligned) {
  if (N < 0) throw std::invalid_argument("N: expected >= 0, got " + std::to_string(N));
  const int esize = static_cast<int>(item_size(dtype));
  const bool vec = aligned && N % pack_elems(esize) == 0;
  Plan plan;
  switch (dtype) {
    case DType::kFloat16: plan = plan_for<Rt, __half>(rt, N, vec); break;
    case DType::kBFloat16: plan = plan_for<Rt, __nv_bfloat16>(rt, N, vec); break;
    case DType::kFloat32: plan = plan_for<Rt, float>(rt, N, vec); break;
    case DType::kFloat64: plan = plan_for<Rt, double>(rt, N, vec); break;
  }
  return plan.describe(vec);
}

}  // namespace SSD_KERNEL_NAMESPACE
}  // namespace ssd
