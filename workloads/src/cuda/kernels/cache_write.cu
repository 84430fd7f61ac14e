// Cache write with quantize-on-write: one warp stores one row (one token of one KV head).
// Sources are f32 rows [batch][src_len][kv_heads][HEAD_DIM] or, with src == 0, the synthetic
// values of stream `synth_key` (so long caches fill without host memory or copies).

struct CacheWriteParams {
    const float* src;
    u8* codes;
    u32* scales;
    const int* block_table;
    const int* start_pos; // [batch] first position to write
    const int* end_pos;   // [batch] one past the last position to write
    u64 synth_key;
    int table_stride;
    int block_size;
    int kv_heads;
    int src_len;        // positions per sequence in src
    int src_base;       // position of src row 0
    int shared_prefix;  // synthetic positions below this are the same for every sequence
};
// The host mirrors this layout in params.rs (#[repr(C)]) and pins the same size and offsets.
static_assert(sizeof(CacheWriteParams) == 80, "CacheWriteParams layout");

#define ROWS_PER_BLOCK 4

template <int C>
__device__ void store_row(u8* row, u32* sc, const float* x, int lane);

template <>
__device__ void store_row<CODEC_F32>(u8* row, u32* sc, const float* x, int lane) {
    float* p = (float*)row + lane * EPL;
#pragma unroll
    for (int i = 0; i < EPL; i++) p[i] = x[i];
}

template <>
__device__ void store_row<CODEC_F16>(u8* row, u32* sc, const float* x, int lane) {
    u16* p = (u16*)row + lane * EPL;
#pragma unroll
    for (int i = 0; i < EPL; i++) p[i] = f32_to_f16(x[i]);
}

template <>
__device__ void store_row<CODEC_BF16>(u8* row, u32* sc, const float* x, int lane) {
    u16* p = (u16*)row + lane * EPL;
#pragma unroll
    for (int i = 0; i < EPL; i++) p[i] = f32_to_bf16(x[i]);
}

template <>
__device__ void store_row<CODEC_INT8>(u8* row, u32* sc, const float* x, int lane) {
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < EPL; i++) amax = fmaxf(amax, fabsf(x[i]));
    amax = warp_max(amax);
    float scale = amax / 127.0f;
    u8* p = row + lane * EPL;
#pragma unroll
    for (int i = 0; i < EPL; i++) {
        float q = scale > 0.0f ? fminf(fmaxf(rintf(x[i] / scale), -127.0f), 127.0f) : 0.0f;
        p[i] = (u8)(signed char)(int)q;
    }
    if (lane == 0) sc[0] = __float_as_uint(scale);
}

template <>
__device__ void store_row<CODEC_FP8_E4M3>(u8* row, u32* sc, const float* x, int lane) {
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < EPL; i++) amax = fmaxf(amax, fabsf(x[i]));
    amax = warp_max(amax);
    float scale = amax / 448.0f;
    u8* p = row + lane * EPL;
#pragma unroll
    for (int i = 0; i < EPL; i++) p[i] = scale > 0.0f ? (u8)f32_to_fp8_e4m3(x[i] / scale) : 0;
    if (lane == 0) sc[0] = __float_as_uint(scale);
}

template <>
__device__ void store_row<CODEC_FP8_E5M2>(u8* row, u32* sc, const float* x, int lane) {
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < EPL; i++) amax = fmaxf(amax, fabsf(x[i]));
    amax = warp_max(amax);
    float scale = amax / 57344.0f;
    u8* p = row + lane * EPL;
#pragma unroll
    for (int i = 0; i < EPL; i++) p[i] = scale > 0.0f ? (u8)f32_to_fp8_e5m2(x[i] / scale) : 0;
    if (lane == 0) sc[0] = __float_as_uint(scale);
}

template <>
__device__ void store_row<CODEC_INT4>(u8* row, u32* sc, const float* x, int lane) {
    // A group of 32 channels spans 32 / EPL lanes.
    const int lanes_per_group = INT4_GROUP / EPL;
    float lo = x[0], hi = x[0];
#pragma unroll
    for (int i = 1; i < EPL; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    lo = group_min(lo, lanes_per_group);
    hi = group_max(hi, lanes_per_group);
    u16 s16 = f32_to_f16((hi - lo) / 15.0f);
    u16 z16 = f32_to_f16(lo);
    float s = f16_to_f32(s16);
    float z = f16_to_f32(z16);
    u8* p = row + lane * (EPL / 2);
#pragma unroll
    for (int i = 0; i < EPL; i += 2) {
        u32 c0 = s > 0.0f ? (u32)fminf(fmaxf(rintf((x[i] - z) / s), 0.0f), 15.0f) : 0u;
        u32 c1 = s > 0.0f ? (u32)fminf(fmaxf(rintf((x[i + 1] - z) / s), 0.0f), 15.0f) : 0u;
        p[i / 2] = (u8)(c0 | (c1 << 4));
    }
    if (lane % lanes_per_group == 0) {
        sc[(lane * EPL) / INT4_GROUP] = (u32)s16 | ((u32)z16 << 16);
    }
}

template <int C>
__device__ void cache_write_impl(const CacheWriteParams& p) {
    const int lane = threadIdx.x % 32;
    const int b = blockIdx.z;
    const int kvh = blockIdx.y;
    const int pos = p.start_pos[b] + blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
    if (pos >= p.end_pos[b]) return; // whole warps leave together: shuffles stay full

    float x[EPL];
    if (p.src) {
        const float* s = p.src +
            (((long long)b * p.src_len + (pos - p.src_base)) * p.kv_heads + kvh) * HEAD_DIM +
            lane * EPL;
#pragma unroll
        for (int i = 0; i < EPL; i++) x[i] = s[i];
    } else {
        u32 sb = pos < p.shared_prefix ? 0u : (u32)b;
#pragma unroll
        for (int i = 0; i < EPL; i++)
            x[i] = synthetic_value(p.synth_key, synthetic_index(sb, pos, kvh, lane * EPL + i));
    }

    long long r = cache_row(p.block_table, p.table_stride, b, pos, p.block_size, p.kv_heads, kvh);
    store_row<C>(p.codes + r * Codec<C>::ROW_BYTES, p.scales + r * Codec<C>::SCALE_WORDS, x,
                 lane);
}

// grid (ceil(max positions / ROWS_PER_BLOCK), kv_heads, batch), block 32 * ROWS_PER_BLOCK.
extern "C" __global__ void cache_write_k(CacheWriteParams p) { cache_write_impl<K_CODEC>(p); }
extern "C" __global__ void cache_write_v(CacheWriteParams p) { cache_write_impl<V_CODEC>(p); }

// Fill f32 rows [batch][len][heads][HEAD_DIM] with the synthetic values of stream `key` at
// positions base .. base + len (queries of the attention workload). grid (len, heads, batch).
extern "C" __global__ void synthetic_rows(float* out, u64 key, int len, int base, int heads) {
    const int b = blockIdx.z, h = blockIdx.y, i = blockIdx.x;
    for (int d = threadIdx.x; d < HEAD_DIM; d += blockDim.x) {
        out[(((long long)b * len + i) * heads + h) * HEAD_DIM + d] =
            synthetic_value(key, synthetic_index((u32)b, (u32)(base + i), (u32)h, (u32)d));
    }
}
