// selection.cpp: process-wide selection state of the CUDA backend (torch-free, CUDA-free).
#include <map>
#include <mutex>
#include <stdexcept>

#include "backend.h"
#include "kernels/halo_fragments.h"
#include "registry.h"
#include "selection.h"

namespace rk {

namespace {
struct State {
  std::mutex mu;
  std::map<std::string, std::string> forced;   // direction -> variant name
  std::map<std::string, std::string> last;     // direction -> variant name
  std::map<std::string, std::string> tuned;    // shape key -> variant name
  bool autotune = false;
};
State& state() {
  static State s;
  return s;
}
}  // namespace

void set_forced_variant(const std::string& direction, const std::string& name) {
  if (direction != "fprop" && direction != "dgrad" && direction != "wgrad")
    throw std::invalid_argument("direction must be fprop, dgrad or wgrad, but got '" + direction + "'");
  if (!name.empty()) {
    const KernelVariant* v = find_variant(name);
    if (!v) throw std::invalid_argument("no CUDA kernel variant named '" + name + "'");
    if (direction != to_string(v->direction))
      throw std::invalid_argument("variant '" + name + "' is a " + to_string(v->direction) +
                                  " kernel, not " + direction);
  }
  std::lock_guard<std::mutex> lock(state().mu);
  state().forced[direction] = name;
}

std::string forced_variant(const std::string& direction) {
  std::lock_guard<std::mutex> lock(state().mu);
  auto it = state().forced.find(direction);
  return it == state().forced.end() ? "" : it->second;
}

void set_autotune(bool on) {
  std::lock_guard<std::mutex> lock(state().mu);
  state().autotune = on;
}

bool autotune_enabled() {
  std::lock_guard<std::mutex> lock(state().mu);
  return state().autotune;
}

std::string last_variant(const std::string& direction) {
  std::lock_guard<std::mutex> lock(state().mu);
  auto it = state().last.find(direction);
  return it == state().last.end() ? "" : it->second;
}

void clear_autotune_cache() {
  std::lock_guard<std::mutex> lock(state().mu);
  state().tuned.clear();
}

void record_last_variant(Direction d, const std::string& name) {
  std::lock_guard<std::mutex> lock(state().mu);
  state().last[to_string(d)] = name;
}

const KernelVariant* cached_choice(const std::string& key) {
  std::lock_guard<std::mutex> lock(state().mu);
  auto it = state().tuned.find(key);
  return it == state().tuned.end() ? nullptr : find_variant(it->second);
}

void cache_choice(const std::string& key, const KernelVariant* v) {
  std::lock_guard<std::mutex> lock(state().mu);
  state().tuned[key] = v->name;
}

const KernelVariant* choose_without_timing(const ConvParams& p, std::string* why) {
  const std::string forced = forced_variant(to_string(p.direction));
  if (!forced.empty()) {
    const KernelVariant* v = find_variant(forced);
    const std::string r = v->can_implement(p);
    if (!r.empty()) {
      if (why) *why = "forced variant " + forced + " cannot run this problem: " + r;
      return nullptr;
    }
    return v;
  }
  return select_heuristic(p, why);
}

HaloPackPlan halo_pack_layout(const ConvProblem& q, bool dgrad) {
  HaloPackPlan plan;
  const int64_t cg = q.Cg();
  if (q.G <= 0 || cg != q.Kg() || !halo_serves(cg) || q.C % halo_slab(int(cg)) != 0) return plan;
  plan.fprop_words = halo_packed_words(q.K, int(cg));
  if (dgrad) {
    plan.dgrad_mode = halo_dgrad_mode_at(q.stride_h);
    plan.dgrad_words = halo_packed_words(q.C, int(cg), plan.dgrad_mode);
  }
  return plan;
}

HaloPackPlan halo_pack_plan(const ConvParams& f, bool dgrad) {
  HaloPackPlan plan = halo_pack_layout(f.problem, dgrad);
  if (plan.fprop_words == 0) return plan;
  ConvParams p = f;
  p.direction = Direction::kFprop;
  const KernelVariant* v = choose_without_timing(p, nullptr);
  plan.used = v != nullptr && std::string(v->name) == "fprop_halo";
  if (dgrad) {
    p.direction = Direction::kDgrad;
    v = choose_without_timing(p, nullptr);
    plan.used = plan.used || (v != nullptr && std::string(v->name) == "dgrad_halo");
  }
  return plan;
}

}  // namespace rk
