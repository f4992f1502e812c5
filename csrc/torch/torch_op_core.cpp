// Core binding, the current CUDA stream and the error hand-over (torch_op_core.h).
#include "torch_op_core.h"

#include <dlfcn.h>

#include <atomic>
#include <stdexcept>
#include <string>

namespace ssd_torch {
namespace {

std::atomic<const SsdCoreTable*> g_table{nullptr};

thread_local ErrorKind g_error_kind = ErrorKind::kNone;
thread_local std::string g_error_message;

std::string& registration_error() {
  static std::string text;  // a function-local static: registration runs in a static initialiser
  return text;
}

using GetStreamFn = int32_t (*)(int32_t device_index, void** ret_stream);  // AOTITorchError
using ErrorTextFn = const char* (*)();

// A symbol of an already loaded torch library: libtorch_cuda (a dependency of libtorch, so
// loaded with torch, but not in the global scope), else the global scope.
void* torch_symbol(const char* library, const char* name) {
  if (void* handle = dlopen(library, RTLD_LAZY | RTLD_NOLOAD)) {
    void* symbol = dlsym(handle, name);
    dlclose(handle);
    if (symbol) return symbol;
  }
  return dlsym(RTLD_DEFAULT, name);
}

}  // namespace

const SsdCoreTable* core_table() { return g_table.load(std::memory_order_acquire); }

const SsdCoreTable& require_core() {
  const SsdCoreTable* table = core_table();
  if (!table)
    throw std::runtime_error(
        "ssd_toolkit::estimate: the op library is loaded but not bound to the compiled core; load it with "
        "ssd_toolkit.engine.torch_op_build.load(), not torch.ops.load_library");
  return *table;
}

void raise_core_status(int32_t status, const char* message) {
  const std::string text = message ? message : "unknown error";
  if (status == kSsdCoreInvalidArgument) throw std::invalid_argument(text);
  throw std::runtime_error("ssd_toolkit::estimate: " + text);
}

void* current_cuda_stream(int32_t device_index) {
  static const auto get_stream =
      reinterpret_cast<GetStreamFn>(torch_symbol("libtorch_cuda.so", "aoti_torch_get_current_cuda_stream"));
  if (!get_stream)
    throw std::runtime_error(
        "ssd_toolkit::estimate: this torch build has no CUDA (aoti_torch_get_current_cuda_stream not found)");
  void* stream = nullptr;
  if (get_stream(device_index, &stream) != 0)
    throw std::runtime_error("ssd_toolkit::estimate: aoti_torch_get_current_cuda_stream failed for cuda:" +
                             std::to_string(device_index));
  return stream;
}

void record_error(ErrorKind kind, const std::string& message) {
  g_error_kind = kind;
  g_error_message = message;
}

void record_registration_error(const std::string& message) {
  if (registration_error().empty()) registration_error() = message;
}

void clear_error() { g_error_kind = ErrorKind::kNone; }

void rethrow_recorded(const char* fallback) {
  const ErrorKind kind = g_error_kind;
  g_error_kind = ErrorKind::kNone;
  if (kind == ErrorKind::kInvalidArgument) throw std::invalid_argument(g_error_message);
  if (kind == ErrorKind::kRuntime) throw std::runtime_error(g_error_message);
  // An error raised by torch itself inside the kernel call: its text where torch >= 2.13 exports it.
  static const auto error_text = reinterpret_cast<ErrorTextFn>(
      torch_symbol("libtorch_cpu.so", "torch_exception_get_what_without_backtrace"));
  const char* text = error_text ? error_text() : nullptr;
  throw std::runtime_error(std::string(fallback) + (text && *text ? std::string(": ") + text : std::string()));
}

}  // namespace ssd_torch

const char* ssd_toolkit_torch_op_bind(const void* table) {
  static std::string reason;
  if (!ssd_torch::registration_error().empty()) return ssd_torch::registration_error().c_str();
  const auto* t = static_cast<const SsdCoreTable*>(table);
  if (!t) return "table: expected the address of ssd_toolkit._C's core table, got 0";
  if (t->version != kSsdCoreTableVersion || t->params_size != sizeof(ssd::EstimateParams)) {
    reason = "ssd_toolkit._C core table: expected version " + std::to_string(kSsdCoreTableVersion) +
             " with a " + std::to_string(sizeof(ssd::EstimateParams)) + "-byte EstimateParams, got version " +
             std::to_string(t->version) + " with " + std::to_string(t->params_size) +
             " bytes (rebuild both: setup.py build_ext and python -m ssd_toolkit.engine.torch_op_build)";
    return reason.c_str();
  }
  ssd_torch::g_table.store(t, std::memory_order_release);
  return nullptr;
}
