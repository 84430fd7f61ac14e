// Emulated cache_write.cu (see cuda_shim.h).
#include "cuda_shim.h"
#include "../kernels/common.cuh"
#include "../kernels/cache_write.cu"

EMU_ENTRY(cache_write_k, CacheWriteParams)
EMU_ENTRY(cache_write_v, CacheWriteParams)

extern "C" __attribute__((visibility("default"))) void emu_synthetic_rows(dim3 grid, dim3 block, float* out, u64 key, int len, int base,
                                   int heads) {
    emu::launch(grid, block, [=] { synthetic_rows(out, key, len, base, heads); });
}
