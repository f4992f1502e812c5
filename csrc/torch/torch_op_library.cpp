// torch.ops.ssd_toolkit.estimate, registered on torch's stable C ABI (docs/kernels.md).
//
//   estimate(Tensor eps_cond, Tensor eps_uncond, Tensor noise, Tensor? t, float t_scalar,
//            float M, bool return_stats) -> (Tensor E, Tensor stats)
//
// `estimate` is a CompositeImplicitAutograd kernel that states the no-gradient contract: it
// runs `estimate_kernel` (same schema; the CPU, CUDA and Meta kernels, torch_op_kernels.cpp)
// with grad mode off, so E and stats are constants (no grad_fn) and no gradient reaches the
// inputs, without a Python frame. The stable ABI has no way to redispatch below autograd
// from a kernel, hence the second op; under torch.compile the graph holds estimate_kernel.
// The arguments are checked here first (metadata only), so a bad call raises its ValueError
// directly, before the dispatcher picks a kernel (a sparse input has none), and again in
// each kernel, which may also be called directly.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/tensor.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>

#include "torch_op_checks.h"
#include "torch_op_core.h"
#include "torch_op_kernels.h"

namespace ssd_torch {
namespace {

using torch::stable::Tensor;
using torch::stable::detail::from;
using torch::stable::detail::to;

constexpr const char* kSchemaArgs =
    "(Tensor eps_cond, Tensor eps_uncond, Tensor noise, Tensor? t, float t_scalar, float M, bool return_stats) "
    "-> (Tensor E, Tensor stats)";

// Grad mode off for the kernel call, restored on every exit.
class NoGrad {
 public:
  NoGrad() : was_enabled_(aoti_torch_grad_mode_is_enabled()) { aoti_torch_grad_mode_set_enabled(false); }
  ~NoGrad() { aoti_torch_grad_mode_set_enabled(was_enabled_); }
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  bool was_enabled_;
};

std::tuple<Tensor, Tensor> estimate(Tensor eps_cond, Tensor eps_uncond, Tensor noise, std::optional<Tensor> t,
                                    double t_scalar, double M, bool return_stats) {
  check_arguments(eps_cond, eps_uncond, noise, t, t_scalar, M);
  std::array<StableIValue, 7> stack{from(eps_cond), from(eps_uncond), from(noise), from(t),
                                    from(t_scalar), from(M),          from(return_stats)};
  clear_error();
  int32_t status;
  {
    NoGrad no_grad;
    status = torch_call_dispatcher("ssd_toolkit::estimate_kernel", "", stack.data(), TORCH_ABI_VERSION);
  }
  if (status != AOTI_TORCH_SUCCESS) rethrow_recorded("ssd_toolkit::estimate: estimate_kernel failed");
  return {to<Tensor>(stack[0]), to<Tensor>(stack[1])};
}

std::string schema(const char* name) { return std::string(name) + kSchemaArgs; }

// The registrations, made with the C shim's calls directly (the STABLE_TORCH_LIBRARY macros
// throw from a static initialiser, which ends the process when, say, an op of the same name is
// already defined): a failure is kept and reported by ssd_toolkit_torch_op_bind, so load()
// returns False with the reason.
class Registrations {
 public:
  Registrations() {
    if (!ok(aoti_torch_library_init_fragment("ssd_toolkit", __FILE__, __LINE__, &def_), "init_fragment") ||
        !ok(aoti_torch_library_def(def_, schema("estimate").c_str()), "def estimate") ||
        !ok(aoti_torch_library_def(def_, schema("estimate_kernel").c_str()), "def estimate_kernel"))
      return;
    (void)(impl("CompositeImplicitAutograd", "estimate", TORCH_BOX(&estimate)) &&
           impl("CPU", "estimate_kernel", TORCH_BOX(&estimate_cpu)) &&
           impl("CUDA", "estimate_kernel", TORCH_BOX(&estimate_cuda)) &&
           impl("Meta", "estimate_kernel", TORCH_BOX(&estimate_meta)));
  }
  ~Registrations() {
    for (TorchLibraryHandle lib : impls_) aoti_torch_delete_library_object(lib);
    if (def_) aoti_torch_delete_library_object(def_);
  }
  Registrations(const Registrations&) = delete;
  Registrations& operator=(const Registrations&) = delete;

 private:
  using Boxed = void (*)(StableIValue*, uint64_t, uint64_t);

  bool ok(AOTITorchError status, const char* what) {
    if (status == AOTI_TORCH_SUCCESS) return true;
    record_registration_error(std::string("registering ssd_toolkit ops failed at ") + what +
                              " (is an op ssd_toolkit::estimate already defined, e.g. by Python? load this "
                              "library first)");
    return false;
  }
  bool impl(const char* key, const char* name, Boxed fn) {
    TorchLibraryHandle lib = nullptr;
    if (!ok(aoti_torch_library_init_impl("ssd_toolkit", key, __FILE__, __LINE__, &lib), key)) return false;
    impls_[count_++] = lib;
    return ok(torch_library_impl(lib, name, fn, TORCH_ABI_VERSION), key);
  }

  TorchLibraryHandle def_ = nullptr;
  TorchLibraryHandle impls_[4] = {};
  int count_ = 0;
};

const Registrations registrations;

}  // namespace
}  // namespace ssd_torch
