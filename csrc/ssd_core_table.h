// The core's entry points as a plain C table, exported by ssd_toolkit._C (`_C.core_table()`
// returns its address), so that other compiled libraries (the torch op, csrc/torch/) call the
// one compiled copy of each kernel instead of compiling the core again.
//
// No exception crosses the table: each entry returns an SsdCoreStatus and, on failure, points
// `*message` at text owned by _C (thread-local, valid until the thread's next call).
#pragma once

#include <cstdint>

#include "ssd_core.h"

extern "C" {

enum SsdCoreStatus : int32_t {
  kSsdCoreOk = 0,
  kSsdCoreInvalidArgument = 1,  // std::invalid_argument: a bad size, dtype, pointer or overlap
  kSsdCoreRuntimeError = 2,     // anything else (a CUDA error, ...)
};

struct SsdCoreTable {
  uint32_t version;      // kSsdCoreTableVersion of the _C that filled it
  uint32_t params_size;  // sizeof(ssd::EstimateParams) in that _C
  // ssd::estimate_cpu (validate_params included).
  int32_t (*estimate_cpu)(const ssd::EstimateParams* p, int32_t num_threads, const char** message);
  // ssd::estimate_cuda on `stream` (a cudaStream_t); nullptr when _C was built without CUDA.
  int32_t (*estimate_cuda)(const ssd::EstimateParams* p, void* stream, const char** message);
};

}  // extern "C"

// Bump on any change of SsdCoreTable or ssd::EstimateParams.
constexpr uint32_t kSsdCoreTableVersion = 1;
