// Emulated prefill_attention.cu (see cuda_shim.h).
#include "cuda_shim.h"
#include "../kernels/common.cuh"
#include "../kernels/prefill_attention.cu"

EMU_ENTRY(prefill_attention, PrefillParams)
