// async_copy.cuh: the asynchronous global -> shared copies and the ldmatrix loads of the halo
// rungs (fprop_halo.cu, wgrad_halo.cu). sm_80 and later; empty on older targets (the rungs'
// can_implement never admits those: the extension is built for sm_80 and sm_90).
#pragma once

#include <cstdint>

namespace rk {

// The shared-space address of a pointer into shared memory.
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Asynchronous global -> shared copy of 16 bytes, bypassing L1 (.cg); `bytes` 0 writes zeros
// without reading.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(smem)), "l"(gmem),
               "r"(bytes));
#endif
}
// The same to a shared-space address.
__device__ __forceinline__ void cp_async16_at(uint32_t smem, const void* gmem, int bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(bytes));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N> __device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// ldmatrix: four (x4) or two (x2) 8x8 b16 matrices, `row` this lane's row address (a pointer,
// or a shared-space address) (mma_fragments.h, ldsm_elem and ldsm_trans_elem: who receives what).
__device__ __forceinline__ void ldsm_x4_at(uint32_t (&r)[4], uint32_t row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(row));
#endif
}
__device__ __forceinline__ void ldsm_x2_at(uint32_t& r0, uint32_t& r1, uint32_t row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n" : "=r"(r0), "=r"(r1) : "r"(row));
#endif
}
__device__ __forceinline__ void ldsm_x4_trans_at(uint32_t (&r)[4], uint32_t row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(row));
#endif
}
// ldsm_x4_trans_at when `p` (warp-uniform: ldmatrix is .sync.aligned), else `r` unchanged; a
// predicated instruction, not a branch.
__device__ __forceinline__ void ldsm_x4_trans_if_at(bool p, uint32_t (&r)[4], uint32_t row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("{\n  .reg .pred p;\n  setp.ne.b32 p, %5, 0;\n"
               "  @p ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n}\n"
               : "+r"(r[0]), "+r"(r[1]), "+r"(r[2]), "+r"(r[3])
               : "r"(row), "r"(int(p)));
#endif
}
__device__ __forceinline__ void ldsm_x2_trans_at(uint32_t& r0, uint32_t& r1, uint32_t row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r0), "=r"(r1) : "r"(row));
#endif
}

}  // namespace rk
