// module.cpp: the Python module resnext_kernels._C. The ops themselves are registered with the
// dispatcher (ops.cpp, ops_cuda.cpp); this module adds what is not an op: argument validation
// shared with the Python API, the variant registry, and the CUDA backend's selection controls.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>

#include "backend.h"
#include "conv_problem.h"
#include "kernels/kernels.h"
#include "registry.h"
#include "selection.h"

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

// A forward problem of dense tensors (rk::dense_params), from the Python side's lists.
rk::ConvParams dense_params(const std::vector<int64_t>& input, const std::vector<int64_t>& weight,
                            const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
                            const std::vector<int64_t>& dilation, int64_t groups,
                            const std::string& dtype, bool channels_last) {
  rk::ConvProblem q;
  const std::string err = rk::make_problem(input, weight, nullptr, stride, padding, dilation,
                                           groups, &q);
  if (!err.empty()) throw std::runtime_error(err);
  rk::DType t;
  if (dtype == "fp32") t = rk::DType::kFloat32;
  else if (dtype == "fp16") t = rk::DType::kFloat16;
  else if (dtype == "bf16") t = rk::DType::kBFloat16;
  else throw std::invalid_argument("dtype must be fp32, fp16 or bf16, got '" + dtype + "'");
  return rk::dense_params(q, t, channels_last);
}

// pack_weight's buffer for a forward problem of dense tensors (channels_last or not), as the CUDA
// op makes it: (16-bit elements of fprop's layout, of the whole buffer, whether it is made: a
// halo rung would read it). The fake op (torch.compile) and the family's checks read it.
py::tuple pack_weight_plan(const std::vector<int64_t>& input, const std::vector<int64_t>& weight,
                           const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
                           const std::vector<int64_t>& dilation, int64_t groups,
                           const std::string& dtype, bool channels_last, bool dgrad) {
  const rk::ConvParams p = dense_params(input, weight, stride, padding, dilation, groups, dtype, channels_last);
  const rk::HaloPackPlan plan = rk::halo_pack_plan(p, dgrad);
  return py::make_tuple(2 * plan.fprop_words, 2 * (plan.fprop_words + plan.dgrad_words), plan.used);
}

// The launch shape variant `name` would run for this problem (dense tensors, channels_last or
// not), with the reason it cannot run it ("" when it can). No GPU needed: the performance model
// reads it (resnext_kernels/perf_model.py).
py::dict variant_shape(const std::string& name, const std::vector<int64_t>& input,
                       const std::vector<int64_t>& weight, const std::vector<int64_t>& stride,
                       const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation,
                       int64_t groups, const std::string& dtype, bool channels_last, int num_sms,
                       bool packed, int sm_version) {
  const rk::KernelVariant* v = rk::find_variant(name);
  if (!v) throw std::invalid_argument("unknown CUDA variant '" + name + "'");
  rk::ConvParams p = dense_params(input, weight, stride, padding, dilation, groups, dtype, channels_last);
  p.direction = v->direction;
  p.num_sms = num_sms;
  p.sm_version = sm_version;
  // The halo rungs' grid with the weight pre-packed (p.packed is only compared with null here).
  if (packed) p.packed = p.x;
  const rk::LaunchShape s = v->shape(p);
  py::dict d;
  d["can_implement"] = v->can_implement(p);
  d["grid_x"] = s.grid_x;
  d["grid_y"] = s.grid_y;
  d["threads"] = s.threads;
  d["smem_bytes"] = s.smem_bytes;
  d["tile_pixels"] = s.tile_pixels;
  d["tile_channels"] = s.tile_channels;
  d["red_channels"] = s.red_channels;
  d["halo_pixels"] = s.halo_pixels;
  d["groups_per_block"] = s.groups_per_block;
  d["tile_images"] = s.tile_images;
  d["tile_rows"] = s.tile_rows;
  d["tile_cols"] = s.tile_cols;
  d["halo_rows"] = s.halo_rows;
  d["halo_cols"] = s.halo_cols;
  d["halo_slots"] = s.halo_slots;
  d["tile_ksteps"] = s.tile_ksteps;
  d["a_loads"] = s.a_loads;
  d["a_loads_x2"] = s.a_loads_x2;
  d["stages"] = s.stages;
  d["splits"] = s.splits;
  d["launches"] = s.launches;
  d["cluster"] = s.cluster;
  d["workspace_elems"] = v->workspace_elems(p);
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "resnext_kernels native extension: op schemas, CPU and CUDA implementations";
  m.def("built_with_cuda", &rk::built_with_cuda);
  m.def("check_conv2d", &check_conv2d, "Validate conv2d arguments; returns the output size.");
  m.def("variants", &variants, "The CUDA kernel registry, in ladder order.");
  m.def("variant_shape", &variant_shape, "Launch shape of a CUDA variant for a problem (no GPU).",
        py::arg("name"), py::arg("input"), py::arg("weight"), py::arg("stride"), py::arg("padding"),
        py::arg("dilation"), py::arg("groups"), py::arg("dtype"), py::arg("channels_last"),
        py::arg("num_sms"), py::arg("packed") = false, py::arg("sm_version") = 90);
  m.def("pack_weight_plan", &pack_weight_plan,
        "pack_weight's buffer for a dense forward problem: (fprop's elements, all, made).");
  m.def("set_forced_variant", &rk::set_forced_variant);
  m.def("forced_variant", &rk::forced_variant);
  m.def("set_autotune", &rk::set_autotune);
  m.def("autotune_enabled", &rk::autotune_enabled);
  m.def("last_variant", &rk::last_variant);
  m.def("clear_autotune_cache", &rk::clear_autotune_cache);
#ifdef RK_WITH_CUDA
  m.def("_set_wgrad_halo_cluster_reduction", &rk::wgrad_halo_set_cluster_reduction,
        "Test hook: false sends wgrad_halo's cluster launches down its two-launch path (the same "
        "split count, the same bits); returns the previous setting.");
  m.def("_wgrad_halo_cluster_launches", &rk::wgrad_halo_cluster_launches,
        "Test hook: how many wgrad_halo launches ran in a thread-block cluster so far.");
#endif
}
