// Shared definitions for kvbench's CUDA kernels, compiled by NVRTC at run time.
//
// Bare NVRTC ships no cuda_fp16.h / cuda_bf16.h / stdint.h, so the few conversions needed are
// written here with inline PTX or bit arithmetic. The host side (workloads/src/cuda/codec.rs)
// holds a bit-exact Rust twin of every encoder and decoder below.
//
// Compile-time parameters, passed as -D options by workloads/src/cuda/compile.rs:
//   HEAD_DIM   elements of one head vector (64, 128 or 256)
//   K_CODEC    storage codec of the K cache (CODEC_* below)
//   V_CODEC    storage codec of the V cache

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined (-DHEAD_DIM=128)"
#endif
#ifndef K_CODEC
#error "K_CODEC must be defined (-DK_CODEC=1)"
#endif
#ifndef V_CODEC
#error "V_CODEC must be defined (-DV_CODEC=1)"
#endif

#define CODEC_F32 0
#define CODEC_F16 1
#define CODEC_BF16 2
#define CODEC_INT8 3
#define CODEC_INT4 4
#define CODEC_FP8_E4M3 5
#define CODEC_FP8_E5M2 6

// Elements one thread loads at a time in the attention kernels (32 bytes of f16).
#define CHUNK 16
// Elements each lane of a warp owns when a warp handles one head vector.
#define EPL (HEAD_DIM / 32)
// Channels per quantization group of the int4 codec (f16 scale + f16 zero point per group).
#define INT4_GROUP 32

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define FULL_MASK 0xffffffffu
#define NEG_INF (-__int_as_float(0x7f800000))
#define LOG2E 1.4426950408889634f

// ---- scalar conversions -------------------------------------------------------------------

#ifdef KVBENCH_EMULATE
// The CPU emulator (../emu/cuda_shim.h) converts in software, rounding as the PTX does.
__device__ __forceinline__ float f16_to_f32(u16 h) { return emu_f16_to_f32(h); }
__device__ __forceinline__ u16 f32_to_f16(float f) { return emu_f32_to_f16(f); }
#else
__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#endif

__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }

__device__ __forceinline__ u16 f32_to_bf16(float f) {
    // Round to nearest even on the upper 16 bits (inputs are finite).
    u32 b = __float_as_uint(f);
    b += 0x7fffu + ((b >> 16) & 1u);
    return (u16)(b >> 16);
}

// fp8 decode: place exponent+mantissa into an f32 and rescale by 2^(127 - bias); exact for
// normals and subnormals. e4m3: bias 7, 3 mantissa bits. e5m2: bias 15, 2 mantissa bits.
__device__ __forceinline__ float fp8_e4m3_to_f32(u32 c) {
    float mag = __uint_as_float((c & 0x7fu) << 20) * 1.329227995784916e36f; // 2^120
    return (c & 0x80u) ? -mag : mag;
}

__device__ __forceinline__ float fp8_e5m2_to_f32(u32 c) {
    float mag = __uint_as_float((c & 0x7fu) << 21) * 5.192296858534828e33f; // 2^112
    return (c & 0x80u) ? -mag : mag;
}

// fp8 encode with round-to-nearest-even and saturation to the largest finite value.
__device__ __forceinline__ u32 f32_to_fp8_e4m3(float x) {
    u32 sign = (__float_as_uint(x) >> 24) & 0x80u;
    float a = fabsf(x);
    u32 code;
    if (a >= 448.0f) {
        code = 0x7eu;
    } else if (a < 0.015625f) { // below 2^-6: subnormal, steps of 2^-9
        code = (u32)rintf(a * 512.0f);
    } else {
        u32 b = __float_as_uint(a);
        b += 0x7ffffu + ((b >> 20) & 1u);
        code = (b >> 20) - ((127u - 7u) << 3);
    }
    return sign | code;
}

__device__ __forceinline__ u32 f32_to_fp8_e5m2(float x) {
    u32 sign = (__float_as_uint(x) >> 24) & 0x80u;
    float a = fabsf(x);
    u32 code;
    if (a >= 57344.0f) {
        code = 0x7bu;
    } else if (a < 6.103515625e-05f) { // below 2^-14: subnormal, steps of 2^-16
        code = (u32)rintf(a * 65536.0f);
    } else {
        u32 b = __float_as_uint(a);
        b += 0xfffffu + ((b >> 21) & 1u);
        code = (b >> 21) - ((127u - 15u) << 2);
    }
    return sign | code;
}

// ---- warp reductions ----------------------------------------------------------------------

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// Reductions over aligned groups of `width` lanes (width a power of two <= 32).
__device__ __forceinline__ float group_max(float v, int width) {
    for (int o = width / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ float group_min(float v, int width) {
    for (int o = width / 2; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ float group_sum(float v, int width) {
    for (int o = width / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// ---- synthetic inputs ---------------------------------------------------------------------

// A counter-based generator: the value of element `index` of stream `key` is a fixed function
// of both, so the host (codec.rs `synthetic_value`) computes the same f32 without a copy.
__device__ __forceinline__ u64 splitmix64(u64 z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Uniform in [-1, 1) with 24 random bits: exactly representable in f32.
__device__ __forceinline__ float synthetic_value(u64 key, u64 index) {
    u64 r = splitmix64(key ^ splitmix64(index));
    return (float)((int)(r >> 40) - (1 << 23)) * 1.1920928955078125e-07f; // 2^-23
}

// ---- storage codecs -----------------------------------------------------------------------
//
// A cache holds, per stored row (one token of one KV head), HEAD_DIM codes in a codes plane and
// SCALE_WORDS 32-bit scale words in a separate scales plane:
//   f32/f16/bf16: no scales;
//   int8, fp8:    one f32 scale per row (symmetric; x = code * scale);
//   int4:         one word per 32 channels: f16 scale (low half) + f16 zero point (high half);
//                 codes two per byte, low nibble first; x = code * scale + zero.

template <int C> struct Codec;

// Each codec splits a load in two: fetch() moves CHUNK channels' raw bytes (and scales) into
// registers, dequant() turns them into f32 where the dot product needs them, so prefetched
// rows stay compact. load16() is both.

template <> struct Codec<CODEC_F32> {
    static const int ROW_BYTES = HEAD_DIM * 4;
    static const int SCALE_WORDS = 0;
    struct Raw {
        uint4 w[4];
    };
    __device__ static Raw fetch(const u8* row, const u32* sc, int chunk) {
        const uint4* p = (const uint4*)(row + chunk * CHUNK * 4);
        Raw r;
#pragma unroll
        for (int i = 0; i < 4; i++) r.w[i] = p[i];
        return r;
    }
    __device__ static void dequant(const Raw& r, float* out) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            out[4 * i + 0] = __uint_as_float(r.w[i].x);
            out[4 * i + 1] = __uint_as_float(r.w[i].y);
            out[4 * i + 2] = __uint_as_float(r.w[i].z);
            out[4 * i + 3] = __uint_as_float(r.w[i].w);
        }
    }
};

template <> struct Codec<CODEC_F16> {
    static const int ROW_BYTES = HEAD_DIM * 2;
    static const int SCALE_WORDS = 0;
    struct Raw {
        uint4 w[2];
    };
    __device__ static Raw fetch(const u8* row, const u32* sc, int chunk) {
        const uint4* p = (const uint4*)(row + chunk * CHUNK * 2);
        Raw r;
        r.w[0] = p[0];
        r.w[1] = p[1];
        return r;
    }
    __device__ static void dequant(const Raw& r, float* out) {
#pragma unroll
        for (int i = 0; i < 2; i++) {
            u32 ws[4] = {r.w[i].x, r.w[i].y, r.w[i].z, r.w[i].w};
#pragma unroll
            for (int j = 0; j < 4; j++) {
                out[8 * i + 2 * j] = f16_to_f32((u16)(ws[j] & 0xffffu));
                out[8 * i + 2 * j + 1] = f16_to_f32((u16)(ws[j] >> 16));
            }
        }
    }
};

template <> struct Codec<CODEC_BF16> {
    static const int ROW_BYTES = HEAD_DIM * 2;
    static const int SCALE_WORDS = 0;
    struct Raw {
        uint4 w[2];
    };
    __device__ static Raw fetch(const u8* row, const u32* sc, int chunk) {
        const uint4* p = (const uint4*)(row + chunk * CHUNK * 2);
        Raw r;
        r.w[0] = p[0];
        r.w[1] = p[1];
        return r;
    }
    __device__ static void dequant(const Raw& r, float* out) {
#pragma unroll
        for (int i = 0; i < 2; i++) {
            u32 ws[4] = {r.w[i].x, r.w[i].y, r.w[i].z, r.w[i].w};
#pragma unroll
            for (int j = 0; j < 4; j++) {
                out[8 * i + 2 * j] = __uint_as_float(ws[j] << 16);
                out[8 * i + 2 * j + 1] = __uint_as_float(ws[j] & 0xffff0000u);
            }
        }
    }
};

// One f32 scale per row, 16 one-byte codes per chunk.
struct Bytes16 {
    uint4 w;
    float s;
};

__device__ __forceinline__ Bytes16 fetch_bytes16(const u8* row, const u32* sc, int chunk) {
    Bytes16 r;
    r.w = *(const uint4*)(row + chunk * CHUNK);
    r.s = __uint_as_float(sc[0]);
    return r;
}

template <> struct Codec<CODEC_INT8> {
    static const int ROW_BYTES = HEAD_DIM;
    static const int SCALE_WORDS = 1;
    typedef Bytes16 Raw;
    __device__ static Raw fetch(const u8* row, const u32* sc, int chunk) {
        return fetch_bytes16(row, sc, chunk);
    }
    __device__ static void dequant(const Raw& r, float* out) {
        u32 ws[4] = {r.w.x, r.w.y, r.w.z, r.w.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            // Flip the sign bits (c + 128 as unsigned bytes), then convert with the magic
            // number 2^23: exact, and integer ops instead of the slower I2F.
            u32 biased = ws[j] ^ 0x80808080u;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                float c = __uint_as_float(0x4b000000u | ((biased >> (8 * k)) & 0xffu)) -
                          8388736.0f;
                out[4 * j + k] = c * r.s;
            }
        }
    }
};

template <> struct Codec<CODEC_FP8_E4M3> {
    static const int ROW_BYTES = HEAD_DIM;
    static const int SCALE_WORDS = 1;
    typedef Bytes16 Raw;
    __device__ static Raw fetch(const u8* row, const u32* sc, int chunk) {
        return fetch_bytes16(row, sc, chunk);
    }
    __device__ static void dequant(const Raw& r, float* out) {
        u32 ws[4] = {r.w.x, r.w.y, r.w.z, r.w.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
#pragma unroll
            for (int k = 0; k < 4; k++) out[4 * j + k] = fp8_e4m3_to_f32(ws[j] >> (8 * k)) * r.s;
        }
    }
};

template <> struct Codec<CODEC_FP8_E5M2> {
    static const int ROW_BYTES = HEAD_DIM;
    static const int SCALE_WORDS = 1;
    typedef Bytes16 Raw;
    __device__ static Raw fetch(const u8* row, const u32* sc, int chunk) {
        return fetch_bytes16(row, sc, chunk);
    }
    __device__ static void dequant(const Raw& r, float* out) {
        u32 ws[4] = {r.w.x, r.w.y, r.w.z, r.w.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
#pragma unroll
            for (int k = 0; k < 4; k++) out[4 * j + k] = fp8_e5m2_to_f32(ws[j] >> (8 * k)) * r.s;
        }
    }
};

template <> struct Codec<CODEC_INT4> {
    static const int ROW_BYTES = HEAD_DIM / 2;
    static const int SCALE_WORDS = HEAD_DIM / INT4_GROUP;
    struct Raw {
        uint2 w;
        u32 g; // f16 scale (low half) + f16 zero point (high half) of the chunk's group
    };
    __device__ static Raw fetch(const u8* row, const u32* sc, int chunk) {
        Raw r;
        r.w = *(const uint2*)(row + chunk * (CHUNK / 2));
        r.g = sc[(chunk * CHUNK) / INT4_GROUP];
        return r;
    }
    __device__ static void dequant(const Raw& r, float* out) {
        float s = f16_to_f32((u16)(r.g & 0xffffu));
        float z = f16_to_f32((u16)(r.g >> 16));
        u32 ws[2] = {r.w.x, r.w.y};
#pragma unroll
        for (int j = 0; j < 2; j++) {
#pragma unroll
            for (int k = 0; k < 8; k++) {
                float c = __uint_as_float(0x4b000000u | ((ws[j] >> (4 * k)) & 0xfu)) - 8388608.0f;
                out[8 * j + k] = fmaf(c, s, z);
            }
        }
    }
};

// Fetch and dequantize CHUNK channels of one row.
template <int C>
__device__ __forceinline__ void load16(const u8* row, const u32* sc, int chunk, float* out) {
    Codec<C>::dequant(Codec<C>::fetch(row, sc, chunk), out);
}

// ---- paged addressing ---------------------------------------------------------------------

// Row index of token `pos` of KV head `kvh` of sequence `b`: pools are laid out
// [block][kv_head][slot]; a contiguous cache is the special case of one block per sequence
// holding max_len slots, with block table row b = {b}.
__device__ __forceinline__ long long cache_row(const int* block_table, int table_stride, int b,
                                               int pos, int block_size, int kv_heads, int kvh) {
    int blk = block_table[(long long)b * table_stride + pos / block_size];
    return ((long long)blk * kv_heads + kvh) * block_size + (pos % block_size);
}

// Index of one element of a synthetic tensor: 22 bits of sequence, 24 of position, 8 of head,
// 10 of channel (the host checks the shape fits).
__device__ __forceinline__ u64 synthetic_index(u32 b, u32 pos, u32 head, u32 d) {
    return ((u64)b << 42) | ((u64)pos << 18) | ((u64)head << 10) | (u64)d;
}
