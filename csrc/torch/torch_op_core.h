// The torch op library's links to the outside: the core's entry points, received once from
// ssd_toolkit._C (ssd_core_table.h), torch's current CUDA stream (resolved at run time, so a
// CPU-only torch loads this library), and the error hand-over between the op and its kernels.
#pragma once

#include <cstdint>
#include <string>

#include "../ssd_core_table.h"

namespace ssd_torch {

// The bound core table, or nullptr before ssd_toolkit_torch_op_bind() succeeded.
const SsdCoreTable* core_table();

// The core table, or a RuntimeError saying how to bind it.
const SsdCoreTable& require_core();

// Throws std::invalid_argument (ValueError) or std::runtime_error with the core's message.
void raise_core_status(int32_t status, const char* message);

// torch's current CUDA stream on `device_index` (a cudaStream_t), through the C shim's
// aoti_torch_get_current_cuda_stream, looked up in libtorch_cuda at the first call; a
// std::runtime_error where torch has no CUDA.
void* current_cuda_stream(int32_t device_index);

// The kernels run behind torch_call_dispatcher, which turns an exception into an error code
// and, before torch 2.13, drops its text. A kernel records its error here before it
// rethrows; the op rethrows the recorded error with its type and text.
enum class ErrorKind { kNone, kInvalidArgument, kRuntime };
void record_error(ErrorKind kind, const std::string& message);
void clear_error();
[[noreturn]] void rethrow_recorded(const char* fallback);

// A failed op registration at load (torch_op_library.cpp), reported by the bind.
void record_registration_error(const std::string& message);

}  // namespace ssd_torch

// Hands the op library the core table of ssd_toolkit._C (`_C.core_table()`); called once by
// ssd_toolkit.engine.torch_op_build.load() through ctypes. Returns nullptr on success, else a
// one-line reason (the ops could not be registered; a table of another version or layout:
// rebuild one of the two).
extern "C" __attribute__((visibility("default"))) const char* ssd_toolkit_torch_op_bind(const void* table);
