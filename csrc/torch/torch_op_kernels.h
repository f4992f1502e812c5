// The kernels of ssd_toolkit::estimate_kernel: CPU and CUDA call the core of ssd_toolkit._C
// (through its entry-point table, torch_op_core.h); Meta gives the output shapes. Each checks
// its arguments (torch_op_checks.h) and records its error for the op (torch_op_core.h).
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <optional>
#include <tuple>

namespace ssd_torch {

using Outputs = std::tuple<torch::stable::Tensor, torch::stable::Tensor>;

Outputs estimate_cpu(torch::stable::Tensor eps_cond, torch::stable::Tensor eps_uncond, torch::stable::Tensor noise,
                     std::optional<torch::stable::Tensor> t, double t_scalar, double M, bool return_stats);
Outputs estimate_cuda(torch::stable::Tensor eps_cond, torch::stable::Tensor eps_uncond, torch::stable::Tensor noise,
                      std::optional<torch::stable::Tensor> t, double t_scalar, double M, bool return_stats);
Outputs estimate_meta(torch::stable::Tensor eps_cond, torch::stable::Tensor eps_uncond, torch::stable::Tensor noise,
                      std::optional<torch::stable::Tensor> t, double t_scalar, double M, bool return_stats);

}  // namespace ssd_torch
