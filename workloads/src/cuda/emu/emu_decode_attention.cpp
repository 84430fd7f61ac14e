// Emulated decode_attention.cu (see cuda_shim.h).
#include "cuda_shim.h"
#include "../kernels/common.cuh"
#include "../kernels/decode_attention.cu"

EMU_ENTRY(decode_attention_g1, DecodeParams)
EMU_ENTRY(decode_attention_g2, DecodeParams)
EMU_ENTRY(decode_attention_g4, DecodeParams)
EMU_ENTRY(decode_merge, DecodeParams)
