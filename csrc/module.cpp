// module.cpp: the Python module resnext_kernels._C. The ops themselves are registered with the
// dispatcher (ops.cpp, ops_cuda.cpp); this module adds what is not an op: argument validation
// shared with the Python API, the variant registry, and the CUDA backend's selection controls.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>

#include "backend.h"
#include "conv_problem.h"
#include "registry.h"

namespace py = pybind11;

namespace rk {

#ifdef RK_WITH_CUDA
bool built_with_cuda() { return true; }
#else
bool built_with_cuda() { return false; }
#endif

}  // namespace rk

namespace {

// Validates conv2d arguments; returns the output size (N, K, P, Q) or raises RuntimeError with
// PyTorch's wording.
std::vector<int64_t> check_conv2d(const std::vector<int64_t>& input, const std::vector<int64_t>& weight,
                                  std::optional<std::vector<int64_t>> bias,
                                  const std::vector<int64_t>& stride,
                                  const std::vector<int64_t>& padding,
                                  const std::vector<int64_t>& dilation, int64_t groups) {
  rk::ConvProblem p;
  const std::string err = rk::make_problem(input, weight, bias ? &*bias : nullptr, stride, padding,
                                           dilation, groups, &p);
  if (!err.empty()) throw std::runtime_error(err);
  return {p.N, p.K, p.P, p.Q};
}

py::list variants() {
  py::list out;
  for (const auto& v : rk::registry()) {
    py::dict d;
    d["name"] = v.name;
    d["direction"] = rk::to_string(v.direction);
    d["rung"] = v.rung;
    d["summary"] = v.summary;
    d["gpu_verified"] = v.gpu_verified;
    out.append(d);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "resnext_kernels native extension: op schemas, CPU and CUDA implementations";
  m.def("built_with_cuda", &rk::built_with_cuda);
  m.def("check_conv2d", &check_conv2d, "Validate conv2d arguments; returns the output size.");
  m.def("variants", &variants, "The CUDA kernel registry, in ladder order.");
  m.def("set_forced_variant", &rk::set_forced_variant);
  m.def("forced_variant", &rk::forced_variant);
  m.def("set_autotune", &rk::set_autotune);
  m.def("autotune_enabled", &rk::autotune_enabled);
  m.def("last_variant", &rk::last_variant);
  m.def("clear_autotune_cache", &rk::clear_autotune_cache);
}
