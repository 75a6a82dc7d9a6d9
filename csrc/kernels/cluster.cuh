// cluster.cuh: thread-block clusters (sm_90 and later): the cluster barrier and loads from
// another CTA's shared memory (distributed shared memory), for wgrad_halo's split reduction.
// Empty on older targets: the launches use clusters only where the device has them
// (ConvParams::sm_version), and a kernel built for sm_80 is never launched in a cluster.
#pragma once

#include <cstdint>

namespace rk {

// Whether this compilation target has clusters (device code; false on the host pass).
__device__ __forceinline__ constexpr bool cluster_target() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  return true;
#else
  return false;
#endif
}

// Every thread of every CTA of the cluster arrives and waits: shared-memory writes before it
// (release) are visible to the cluster's loads after it (acquire). All threads call it.
__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n"
               "barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
}

// The same barrier without ordering memory: for leaving only once the cluster's CTAs are done
// reading this one's shared memory (their loads have returned when they arrive).
__device__ __forceinline__ void cluster_sync_relaxed() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n"
               "barrier.cluster.wait.aligned;\n" ::: "memory");
#endif
}

// The generic address, in the cluster's CTA `rank`, of what `p` (this CTA's shared memory)
// addresses: loads through it read that CTA's shared memory (distributed shared memory) as plain
// generic loads, with no window lookup a load.
template <typename T>
__device__ __forceinline__ const T* cluster_map(const T* p, uint32_t rank) {
  uint64_t remote = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm("mapa.u64 %0, %1, %2;\n" : "=l"(remote) : "l"(reinterpret_cast<uint64_t>(p)), "r"(rank));
#endif
  return reinterpret_cast<const T*>(remote);
}

}  // namespace rk
