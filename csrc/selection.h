// selection.h: internal helpers of the selector, shared by the CUDA bindings and the C++ tests.
#pragma once

#include <string>

#include "conv_problem.h"
#include "registry.h"

namespace rk {

void record_last_variant(Direction d, const std::string& name);
const KernelVariant* cached_choice(const std::string& key);
void cache_choice(const std::string& key, const KernelVariant* v);

// The forced variant if one is set (null with `why` filled if it cannot run `p`), else the
// heuristic choice. Autotuning, which needs the GPU, lives in ops_cuda.cpp.
const KernelVariant* choose_without_timing(const ConvParams& p, std::string* why);

// The weight packed before the launch that fprop_halo and dgrad_halo read (ConvParams::packed)
// for a forward problem: 32-bit words of fprop's layout, then, packed for dgrad too, of dgrad's
// layout in `dgrad_mode` (halo_fragments.h); zeros where Cg is not one the rungs serve.
struct HaloPackPlan {
  int64_t fprop_words = 0, dgrad_words = 0;
  int dgrad_mode = -1;   // -1: fprop's layout alone
  bool used = false;     // fprop's or dgrad's choice for the problem is its halo rung
};
// The layout of a weight packed for problem `q` (fprop's view), with dgrad's or not.
HaloPackPlan halo_pack_layout(const ConvProblem& q, bool dgrad);
// The same, and whether a rung reads it: `f` is the forward problem (dense_params: dgrad's dy
// and dx are then laid out like f's y and x), as choose_without_timing (the forced variant,
// else the heuristic) would run fprop and, with `dgrad`, dgrad.
HaloPackPlan halo_pack_plan(const ConvParams& f, bool dgrad);

}  // namespace rk
