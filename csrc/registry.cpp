// registry.cpp: the variant table and the heuristic selector (no torch, no CUDA runtime).
#include "registry.h"

#include <sstream>

#include "kernels/kernels.h"

namespace rk {

namespace {
[[maybe_unused]] int64_t no_workspace(const ConvParams&) { return 0; }
}  // namespace

const std::vector<KernelVariant>& registry() {
  // A build without CUDA (RESNEXT_KERNELS_CUDA=0) has no kernels, so an empty ladder.
  static const std::vector<KernelVariant> table = {
#ifdef RK_WITH_CUDA
      // name, direction, rung, summary, GPU-verified (direct rung: H100 run of 2026-11-28 04:34;
      // fprop_smem: H200 run of 2026-11-28 06:36, GPU tests and compute-sanitizer. fprop_mma
      // passed every edge case it claims in fp16 and bf16 on the H200 (06:53, commit 0534534)
      // and was then generalised into gather_mma.cu with dgrad_mma: both wait for a GPU check.)
      {"fprop_direct", Direction::kFprop, 1,
       "one thread per output element on CUDA cores; fp32 accumulation; any layout", true,
       fprop_direct_can_implement, no_workspace, fprop_direct_launch},
      {"fprop_smem", Direction::kFprop, 2,
       "8x8 pixel tile x a pack of groups per block; input halo and weights in shared memory, "
       "reused by the 9 taps", true,
       fprop_smem_can_implement, no_workspace, fprop_smem_launch},
      {"fprop_mma", Direction::kFprop, 3,
       "tensor-core implicit GEMM (mma.sync m16n8k16, fp16/bf16, fp32 accumulation): 128 "
       "pixels x 64 output channels per block, narrow groups packed block-diagonally, weights "
       "in shared memory; channels_last, Cg <= 64", false,
       fprop_mma_can_implement, no_workspace, fprop_mma_launch},
      {"dgrad_direct", Direction::kDgrad, 1,
       "one thread per input-gradient element, gathering the taps that reach it", true,
       dgrad_direct_can_implement, no_workspace, dgrad_direct_launch},
      {"dgrad_smem", Direction::kDgrad, 2,
       "8x8 dx tile x a pack of groups per block; the dy halo and weights in shared memory, "
       "reused by the taps that reach each pixel", false,
       dgrad_smem_can_implement, no_workspace, dgrad_smem_launch},
      {"dgrad_mma", Direction::kDgrad, 3,
       "tensor-core implicit GEMM (the fprop_mma kernel in gather form): dx pixels by stride "
       "phase, only the taps that reach them; channels_last dy, Kg <= 64", false,
       dgrad_mma_can_implement, no_workspace, dgrad_mma_launch},
      {"wgrad_direct", Direction::kWgrad, 1,
       "one block per weight element and split of N*P*Q; fixed-order two-pass reduction", true,
       wgrad_direct_can_implement, wgrad_direct_workspace_elems, wgrad_direct_launch},
      {"wgrad_smem", Direction::kWgrad, 2,
       "blocks walk 8x8 output tiles of a pack of groups: x halo and dy tile in shared memory, "
       "per-thread weight sums; fixed-order reduction of the splits", false,
       wgrad_smem_can_implement, wgrad_smem_workspace_elems, wgrad_smem_launch},
      {"wgrad_mma", Direction::kWgrad, 3,
       "tensor-core GEMM per pack of groups and tap, N*P*Q split across blocks and staged "
       "transposed in shared memory; fixed-order reduction of the splits; Cg, Kg <= 64", false,
       wgrad_mma_can_implement, wgrad_mma_workspace_elems, wgrad_mma_launch},
#endif
  };
  return table;
}

const KernelVariant* find_variant(const std::string& name) {
  for (const auto& v : registry())
    if (name == v.name) return &v;
  return nullptr;
}

std::vector<const KernelVariant*> eligible_variants(const ConvParams& p) {
  std::vector<const KernelVariant*> out;
  for (const auto& v : registry())
    if (v.direction == p.direction && v.gpu_verified && v.can_implement(p).empty())
      out.push_back(&v);
  return out;
}

const KernelVariant* select_heuristic(const ConvParams& p, std::string* why) {
  const KernelVariant* best = nullptr;
  std::ostringstream reasons;
  for (const auto& v : registry()) {
    if (v.direction != p.direction) continue;
    const std::string r = v.gpu_verified ? v.can_implement(p) : "not yet verified on a GPU";
    if (r.empty()) {
      if (!best || v.rung > best->rung) best = &v;
    } else {
      reasons << v.name << ": " << r << "\n";
    }
  }
  if (!best && why) *why = reasons.str();
  return best;
}

std::string shape_key(const ConvParams& p) {
  const ConvProblem& q = p.problem;
  std::ostringstream os;
  os << to_string(p.direction) << ':' << to_string(p.dtype) << ':' << q.N << ',' << q.C << ','
     << q.H << ',' << q.W << ':' << q.K << ',' << q.G << ':' << q.stride_h << ',' << q.stride_w
     << ':' << q.pad_h << ',' << q.pad_w << ':' << q.dil_h << ',' << q.dil_w << ':'
     << (channels_innermost(p.x_stride) ? "nhwc" : "nchw") << ':' << (p.bias ? 'b' : '-')
     << (p.relu ? 'r' : '-') << (p.allow_tf32 ? 't' : '-');
  return os.str();
}

std::string check_common(const ConvParams& p) {
  const ConvProblem& q = p.problem;
  if (q.R != 3 || q.S != 3) {
    std::ostringstream os;
    os << "kernel size " << q.R << "x" << q.S << " is not 3x3";
    return os.str();
  }
  if (q.G <= 0 || q.C % q.G != 0 || q.K % q.G != 0) return "channels are not divisible by groups";
  if (q.P <= 0 || q.Q <= 0) return "empty output";
  return "";
}

}  // namespace rk
