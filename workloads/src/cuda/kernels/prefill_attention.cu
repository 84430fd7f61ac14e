// Prefill attention: causal attention of a run of prompt queries over the cache, tiled over
// keys with an online softmax (base 2).
//
// A block handles PREFILL_ROWS rows of the flattened (query position, query head of the
// group) order of one (KV head, sequence), so a K/V tile, dequantized once into shared
// memory, serves every query head of the group and several positions. Each warp owns
// ROWS_PER_WARP rows; lane j scores key j of the tile, then the warp accumulates V with the
// probabilities broadcast by shuffle (lane owns channels lane + 32 e).

struct PrefillParams {
    const float* q; // [batch][n_q][q_heads][HEAD_DIM], positions q_start .. q_start + n_q
    const u8* k_codes;
    const u32* k_scales;
    const u8* v_codes;
    const u32* v_scales;
    const int* block_table;
    float* out; // [batch][n_q][q_heads][HEAD_DIM]
    int table_stride;
    int block_size;
    int kv_heads;
    int q_heads;
    int q_start;
    int n_q;
    float sm_scale_log2;
    int pad;
};
// The host mirrors this layout in params.rs (#[repr(C)]) and pins the same size and offsets.
static_assert(sizeof(PrefillParams) == 88, "PrefillParams layout");

#define PREFILL_THREADS 128
#define PREFILL_WARPS (PREFILL_THREADS / 32)
#define ROWS_PER_WARP 4
#define PREFILL_ROWS (PREFILL_WARPS * ROWS_PER_WARP)
#if HEAD_DIM <= 128
#define TILE_K 32
#else
#define TILE_K 8
#endif
// +1 pads rows so lane j reading key j hits bank (j + d) % 32: no conflicts.
#define K_STRIDE (HEAD_DIM + 1)

// grid (ceil(n_q * group / PREFILL_ROWS), kv_heads, batch), block PREFILL_THREADS.
extern "C" __global__ void __launch_bounds__(PREFILL_THREADS) prefill_attention(PrefillParams p) {
    __shared__ float s_q[PREFILL_ROWS][HEAD_DIM];
    __shared__ float s_k[TILE_K][K_STRIDE];
    __shared__ float s_v[TILE_K][K_STRIDE];

    const int group = p.q_heads / p.kv_heads;
    const int kvh = blockIdx.y;
    const int b = blockIdx.z;
    const int row0 = blockIdx.x * PREFILL_ROWS;
    const int total_rows = p.n_q * group;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;

    for (int idx = threadIdx.x; idx < PREFILL_ROWS * HEAD_DIM; idx += PREFILL_THREADS) {
        const int r = row0 + idx / HEAD_DIM;
        const int d = idx % HEAD_DIM;
        float v = 0.0f;
        if (r < total_rows) {
            const int i = r / group;
            const int qh = kvh * group + r % group;
            v = p.q[(((long long)b * p.n_q + i) * p.q_heads + qh) * HEAD_DIM + d] *
                p.sm_scale_log2;
        }
        s_q[idx / HEAD_DIM][d] = v;
    }

    // Keys needed: up to the last query position of this block.
    const int last_row = min(row0 + PREFILL_ROWS, total_rows) - 1;
    const int kv_len = p.q_start + last_row / group + 1;

    int pos[ROWS_PER_WARP];
    float m[ROWS_PER_WARP], l[ROWS_PER_WARP], acc[ROWS_PER_WARP][EPL];
#pragma unroll
    for (int rr = 0; rr < ROWS_PER_WARP; rr++) {
        const int r = row0 + warp * ROWS_PER_WARP + rr;
        pos[rr] = r < total_rows ? p.q_start + r / group : -1;
        m[rr] = NEG_INF;
        l[rr] = 0.0f;
#pragma unroll
        for (int e = 0; e < EPL; e++) acc[rr][e] = 0.0f;
    }

    for (int k0 = 0; k0 < kv_len; k0 += TILE_K) {
        __syncthreads(); // the previous tile is no longer read
        for (int c = threadIdx.x; c < TILE_K * (HEAD_DIM / CHUNK); c += PREFILL_THREADS) {
            const int j = c / (HEAD_DIM / CHUNK);
            const int chunk = c % (HEAD_DIM / CHUNK);
            float kx[CHUNK], vx[CHUNK];
            if (k0 + j < kv_len) {
                long long r = cache_row(p.block_table, p.table_stride, b, k0 + j, p.block_size,
                                        p.kv_heads, kvh);
                load16<K_CODEC>(p.k_codes + r * Codec<K_CODEC>::ROW_BYTES,
                                       p.k_scales + r * Codec<K_CODEC>::SCALE_WORDS, chunk, kx);
                load16<V_CODEC>(p.v_codes + r * Codec<V_CODEC>::ROW_BYTES,
                                       p.v_scales + r * Codec<V_CODEC>::SCALE_WORDS, chunk, vx);
            } else {
#pragma unroll
                for (int i = 0; i < CHUNK; i++) kx[i] = vx[i] = 0.0f;
            }
#pragma unroll
            for (int i = 0; i < CHUNK; i++) {
                s_k[j][chunk * CHUNK + i] = kx[i];
                s_v[j][chunk * CHUNK + i] = vx[i];
            }
        }
        __syncthreads();

#pragma unroll
        for (int rr = 0; rr < ROWS_PER_WARP; rr++) {
            const float* qrow = s_q[warp * ROWS_PER_WARP + rr];
            float s = NEG_INF;
            const int key = k0 + lane;
            if (lane < TILE_K && key <= pos[rr]) {
                s = 0.0f;
#pragma unroll 8
                for (int d = 0; d < HEAD_DIM; d++) s = fmaf(qrow[d], s_k[lane][d], s);
            }
            const float m_new = fmaxf(m[rr], warp_max(s));
            if (m_new == NEG_INF) continue; // row not started yet (or an unused row)
            const float corr = exp2f(m[rr] - m_new);
            const float pr = exp2f(s - m_new);
            l[rr] = l[rr] * corr + warp_sum(pr);
#pragma unroll
            for (int e = 0; e < EPL; e++) acc[rr][e] *= corr;
            for (int j = 0; j < TILE_K; j++) {
                const float pj = __shfl_sync(FULL_MASK, pr, j);
#pragma unroll
                for (int e = 0; e < EPL; e++) acc[rr][e] = fmaf(pj, s_v[j][lane + 32 * e], acc[rr][e]);
            }
            m[rr] = m_new;
        }
    }

#pragma unroll
    for (int rr = 0; rr < ROWS_PER_WARP; rr++) {
        const int r = row0 + warp * ROWS_PER_WARP + rr;
        if (r >= total_rows) continue;
        const int i = r / group;
        const int qh = kvh * group + r % group;
        float* o = p.out + (((long long)b * p.n_q + i) * p.q_heads + qh) * HEAD_DIM;
#pragma unroll
        for (int e = 0; e < EPL; e++) o[lane + 32 * e] = acc[rr][e] / l[rr];
    }
}
