// Decode attention: one new query token per sequence against its whole cache (contiguous or
// paged), split-K over the context with an exact log-sum-exp merge.
//
// One thread block handles one (KV head, chunk of G query heads, sequence, split): every K/V
// byte of the split is read once and used for all G query heads that share the KV head (GQA).
// Each row (token) is read by TPT = HEAD_DIM / CHUNK threads, CHUNK elements each, dequantized
// in registers inside the dot product; token groups keep an online softmax (base 2), then
// are merged across the warp (shuffles) and the block (shared memory). The merge kernel
// combines the splits: out = sum_s acc_s 2^(m_s - M) / sum_s l_s 2^(m_s - M).

struct DecodeParams {
    const float* q; // [batch][q_heads][HEAD_DIM]
    const u8* k_codes;
    const u32* k_scales;
    const u8* v_codes;
    const u32* v_scales;
    const int* block_table; // [batch][table_stride]
    const int* seq_lens;    // [batch] tokens to attend to
    float* part_acc;        // [batch][q_heads][splits][HEAD_DIM], unnormalised
    float* part_ml;         // [batch][q_heads][splits][2]: running max (log2 domain), sum
    float* out;             // [batch][q_heads][HEAD_DIM]
    int table_stride;
    int block_size;
    int kv_heads;
    int q_heads;
    int splits;
    int tokens_per_split;
    float sm_scale_log2; // 1/sqrt(head_dim) * log2(e)
    int pad;
};
// The host mirrors this layout in params.rs (#[repr(C)]) and pins the same size and offsets.
static_assert(sizeof(DecodeParams) == 112, "DecodeParams layout");

#define DECODE_THREADS 128
#define DECODE_WARPS (DECODE_THREADS / 32)
#define TPT (HEAD_DIM / CHUNK)

typedef Codec<K_CODEC>::Raw KRaw;
typedef Codec<V_CODEC>::Raw VRaw;

// Fetch the raw (still quantized) CHUNK channels of token t's K and V rows; nothing past
// the split's end (those lanes compute on stale registers and are masked).
__device__ __forceinline__ void fetch_kv(const DecodeParams& p, int b, int kvh, int t, int t1,
                                         int lt, KRaw& k, VRaw& v) {
    if (t < t1) {
        long long r = cache_row(p.block_table, p.table_stride, b, t, p.block_size, p.kv_heads, kvh);
        k = Codec<K_CODEC>::fetch(p.k_codes + r * Codec<K_CODEC>::ROW_BYTES,
                                  p.k_scales + r * Codec<K_CODEC>::SCALE_WORDS, lt);
        v = Codec<V_CODEC>::fetch(p.v_codes + r * Codec<V_CODEC>::ROW_BYTES,
                                  p.v_scales + r * Codec<V_CODEC>::SCALE_WORDS, lt);
    }
}

template <int G>
__device__ void decode_impl(const DecodeParams& p) {
    const int tg_per_warp = 32 / TPT;
    const int ntg = DECODE_THREADS / TPT;
    const int group = p.q_heads / p.kv_heads;
    const int chunks = group / G;
    const int kvh = blockIdx.x / chunks;
    const int qh0 = kvh * group + (blockIdx.x % chunks) * G;
    const int b = blockIdx.y;
    const int split = blockIdx.z;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int lt = lane % TPT;
    const int tg = lane / TPT;

    const int len = p.seq_lens[b];
    const int t0 = split * p.tokens_per_split;
    const int t1 = min(len, t0 + p.tokens_per_split);

    float q[G][CHUNK], acc[G][CHUNK], m[G], l[G];
#pragma unroll
    for (int h = 0; h < G; h++) {
        const float* qp = p.q + ((long long)b * p.q_heads + qh0 + h) * HEAD_DIM + lt * CHUNK;
#pragma unroll
        for (int i = 0; i < CHUNK; i++) {
            q[h][i] = qp[i] * p.sm_scale_log2;
            acc[h][i] = 0.0f;
        }
        m[h] = NEG_INF;
        l[h] = 0.0f;
    }

    // The loop bound is uniform across a warp so the shuffles below always have every lane.
    // Software pipelined: the next token's raw K/V loads are in flight while this one is
    // dequantized and computed.
    KRaw kr, krn;
    VRaw vr, vrn;
    // Invalid lanes keep whatever these hold; zero them so no NaN pattern reaches a shuffle.
    memset(&kr, 0, sizeof(kr));
    memset(&vr, 0, sizeof(vr));
    krn = kr;
    vrn = vr;
    const int first = t0 + warp * tg_per_warp;
    fetch_kv(p, b, kvh, first + tg, t1, lt, kr, vr);
    for (int base = first; base < t1; base += ntg) {
        const int t = base + tg;
        const bool valid = t < t1;
        fetch_kv(p, b, kvh, t + ntg, t1, lt, krn, vrn);
        float k[CHUNK], v[CHUNK];
        Codec<K_CODEC>::dequant(kr, k);
        Codec<V_CODEC>::dequant(vr, v);
#pragma unroll
        for (int h = 0; h < G; h++) {
            float s = 0.0f;
#pragma unroll
            for (int i = 0; i < CHUNK; i++) s = fmaf(q[h][i], k[i], s);
            s = group_sum(s, TPT);
            if (valid) {
                float m_new = fmaxf(m[h], s);
                float corr = exp2f(m[h] - m_new);
                float pr = exp2f(s - m_new);
                l[h] = l[h] * corr + pr;
#pragma unroll
                for (int i = 0; i < CHUNK; i++) acc[h][i] = fmaf(acc[h][i], corr, pr * v[i]);
                m[h] = m_new;
            }
        }
        kr = krn;
        vr = vrn;
    }

    // Merge the token groups of this warp (lanes lt, lt + TPT, ... hold the same channels).
#pragma unroll
    for (int o = TPT; o < 32; o <<= 1) {
#pragma unroll
        for (int h = 0; h < G; h++) {
            float m_o = __shfl_xor_sync(FULL_MASK, m[h], o);
            float l_o = __shfl_xor_sync(FULL_MASK, l[h], o);
            float m_new = fmaxf(m[h], m_o);
            float a = m_new == NEG_INF ? 0.0f : exp2f(m[h] - m_new);
            float c = m_new == NEG_INF ? 0.0f : exp2f(m_o - m_new);
            l[h] = l[h] * a + l_o * c;
#pragma unroll
            for (int i = 0; i < CHUNK; i++) {
                float acc_o = __shfl_xor_sync(FULL_MASK, acc[h][i], o);
                acc[h][i] = acc[h][i] * a + acc_o * c;
            }
            m[h] = m_new;
        }
    }

    __shared__ float s_m[DECODE_WARPS][G];
    __shared__ float s_l[DECODE_WARPS][G];
    __shared__ float s_acc[DECODE_WARPS][G][HEAD_DIM];
    if (tg == 0) {
#pragma unroll
        for (int h = 0; h < G; h++) {
#pragma unroll
            for (int i = 0; i < CHUNK; i++) s_acc[warp][h][lt * CHUNK + i] = acc[h][i];
            if (lt == 0) {
                s_m[warp][h] = m[h];
                s_l[warp][h] = l[h];
            }
        }
    }
    __syncthreads();

    for (int idx = threadIdx.x; idx < G * HEAD_DIM; idx += DECODE_THREADS) {
        const int h = idx / HEAD_DIM;
        const int d = idx % HEAD_DIM;
        float mx = NEG_INF;
#pragma unroll
        for (int w = 0; w < DECODE_WARPS; w++) mx = fmaxf(mx, s_m[w][h]);
        float a_sum = 0.0f, l_sum = 0.0f;
        if (mx != NEG_INF) {
#pragma unroll
            for (int w = 0; w < DECODE_WARPS; w++) {
                float f = exp2f(s_m[w][h] - mx);
                a_sum += s_acc[w][h][d] * f;
                l_sum += s_l[w][h] * f;
            }
        }
        const long long slot = ((long long)b * p.q_heads + qh0 + h) * p.splits + split;
        p.part_acc[slot * HEAD_DIM + d] = a_sum;
        if (d == 0) {
            p.part_ml[slot * 2] = mx;
            p.part_ml[slot * 2 + 1] = l_sum;
        }
    }
}

// grid (kv_heads * (group / G), batch, splits), block DECODE_THREADS.
extern "C" __global__ void __launch_bounds__(DECODE_THREADS) decode_attention_g1(DecodeParams p) {
    decode_impl<1>(p);
}
extern "C" __global__ void __launch_bounds__(DECODE_THREADS) decode_attention_g2(DecodeParams p) {
    decode_impl<2>(p);
}
extern "C" __global__ void __launch_bounds__(DECODE_THREADS) decode_attention_g4(DecodeParams p) {
    decode_impl<4>(p);
}

// Exact merge of the splits. grid (q_heads, batch), block HEAD_DIM.
extern "C" __global__ void decode_merge(DecodeParams p) {
    const int qh = blockIdx.x, b = blockIdx.y, d = threadIdx.x;
    const long long first = ((long long)b * p.q_heads + qh) * p.splits;
    float mx = NEG_INF;
    for (int s = 0; s < p.splits; s++) mx = fmaxf(mx, p.part_ml[(first + s) * 2]);
    float a_sum = 0.0f, l_sum = 0.0f;
    if (mx != NEG_INF) {
        for (int s = 0; s < p.splits; s++) {
            float f = exp2f(p.part_ml[(first + s) * 2] - mx);
            a_sum += p.part_acc[(first + s) * HEAD_DIM + d] * f;
            l_sum += p.part_ml[(first + s) * 2 + 1] * f;
        }
    }
    p.out[((long long)b * p.q_heads + qh) * HEAD_DIM + d] = l_sum > 0.0f ? a_sum / l_sum : 0.0f;
}
