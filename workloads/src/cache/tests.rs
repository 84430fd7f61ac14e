use super::*;
use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};
use proptest::prelude::*;

fn geom(layers: usize, kv_heads: usize, hd: usize, batch: usize, max_len: usize) -> CacheGeometry {
    let shape = ModelShape::uniform(
        "t",
        layers as u32,
        kv_heads as u32,
        kv_heads as u32,
        hd as u32,
        64,
        64,
    );
    let f32 = CacheDtype::new(DtypeKind::F32);
    CacheGeometry::new(&shape, None, f32, f32, batch as u32, max_len as u32, 16, 0).unwrap()
}

/// A distinct value for every (layer, seq, position, head, channel, K or V).
fn val(layer: usize, seq: usize, pos: usize, i: usize, is_v: bool) -> f32 {
    (layer * 1_000_000 + seq * 100_000 + pos * 100 + i) as f32 + if is_v { 0.5 } else { 0.0 }
}

fn row(g: &CacheGeometry, layer: usize, seq: usize, pos: usize, is_v: bool) -> Vec<f32> {
    (0..g.kv_heads * g.head_dim)
        .map(|i| val(layer, seq, pos, i, is_v))
        .collect()
}

fn decode(segs: &[Segment]) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for s in segs {
        for r in s.row0..s.row0 + s.rows {
            let ut = s.codec.unit_tokens;
            let unit = &s.bytes[r / ut * s.codec.unit_bytes..(r / ut + 1) * s.codec.unit_bytes];
            let mut v = vec![0.0; s.codec.head_dim];
            s.codec.decode_row(unit, r % ut, &mut v);
            out.push(v);
        }
    }
    out
}

fn make(strategy: &str, g: &CacheGeometry) -> Box<dyn KvCache> {
    match strategy {
        "concat" => Box::new(DenseCache::new(g, true).unwrap()),
        "contiguous" => Box::new(DenseCache::new(g, false).unwrap()),
        _ => Box::new(PagedCache::new(g).unwrap()),
    }
}

/// Fill every layer/sequence to `len` and check each view holds exactly the last
/// `window` rows in order.
fn check_views(strategy: &str, g: &CacheGeometry, len: usize) {
    let mut c = make(strategy, g);
    for pos in 0..len {
        for l in 0..g.layers {
            for s in 0..g.batch {
                c.append(l, s, &row(g, l, s, pos, false), &row(g, l, s, pos, true))
                    .unwrap();
            }
        }
    }
    for l in 0..g.layers {
        let first = g.windows[l].map_or(0, |w| len.saturating_sub(w));
        for s in 0..g.batch {
            assert_eq!(c.len(l, s), len);
            for h in 0..g.kv_heads {
                let view = c.view(l, s, h);
                let (k, v) = (decode(&view.k), decode(&view.v));
                assert_eq!(k.len(), len - first, "{strategy} layer {l}");
                for (i, pos) in (first..len).enumerate() {
                    let hd = g.head_dim;
                    assert_eq!(k[i], row(g, l, s, pos, false)[h * hd..(h + 1) * hd]);
                    assert_eq!(v[i], row(g, l, s, pos, true)[h * hd..(h + 1) * hd]);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn every_layout_shows_exactly_the_rows_of_its_window(
        layers in 1usize..3, kv_heads in 1usize..3, batch in 1usize..3,
        len in 1usize..70, block in 1usize..20, window in prop::option::of(1usize..40),
    ) {
        let mut g = geom(layers, kv_heads, 4, batch, 80);
        g.block_size = block;
        g.windows = (0..layers).map(|l| if l == 0 { window } else { None }).collect();
        for s in ["concat", "contiguous", "paged"] {
            check_views(s, &g, len);
        }
    }
}

/// The storage contract's formulas (docs/storage-contract.md), computed by hand.
fn contract_contiguous(g: &CacheGeometry) -> u64 {
    (0..g.layers)
        .map(|l| {
            let cap = g.cap(l);
            (g.batch * g.kv_heads) as u64
                * (g.head_bytes(&g.k_dtype, cap) + g.head_bytes(&g.v_dtype, cap))
        })
        .sum()
}

fn contract_paged_blocks(g: &CacheGeometry, len: usize) -> u64 {
    let b = g.block_size;
    let shared = g.shared_prefix / b;
    (0..g.layers)
        .map(|l| {
            let per_seq = match g.windows[l] {
                None => len.div_ceil(b),
                Some(w) => (len - 1) / b - len.saturating_sub(w) / b + 1,
            };
            // Shared full prefix blocks still held (those not slid out) count once.
            let first = g.windows[l].map_or(0, |w| len.saturating_sub(w) / b);
            let shared_held = shared.saturating_sub(first);
            (g.batch * per_seq - (g.batch - 1) * shared_held) as u64
        })
        .sum()
}

#[test]
fn contiguous_allocates_the_contract_figure_for_every_dtype() {
    use DtypeKind::*;
    let (kk, kv) = CacheDtype::kivi(Int4, 64);
    let mut pairs: Vec<(CacheDtype, CacheDtype)> = [F32, F16, Bf16, Fp8E4m3, Int8, Int4, Nf4, Int2]
        .into_iter()
        .map(|k| (CacheDtype::new(k), CacheDtype::new(k)))
        .collect();
    pairs.push((kk, kv));
    for (k, v) in pairs {
        let mut g = geom(2, 2, 64, 3, 200);
        g.k_dtype = k;
        g.v_dtype = v;
        let mut c = DenseCache::new(&g, false).unwrap();
        assert_eq!(
            c.memory().kv_bytes_allocated,
            contract_contiguous(&g),
            "{k:?}"
        );
        assert_eq!(c.memory().kv_bytes_used, 0);
        // Concat grows to exactly the same figure once it holds max_len tokens.
        let mut cat = DenseCache::new(&g, true).unwrap();
        for _ in 0..200 {
            for l in 0..2 {
                for s in 0..3 {
                    let r = vec![0.25f32; 128];
                    c.append(l, s, &r, &r).unwrap();
                    cat.append(l, s, &r, &r).unwrap();
                }
            }
        }
        assert_eq!(
            cat.memory().kv_bytes_allocated,
            contract_contiguous(&g),
            "{k:?}"
        );
        assert_eq!(c.memory().kv_bytes_allocated, contract_contiguous(&g));
    }
}

#[test]
fn a_full_layer_of_llama2_7b_in_f16_is_512_kib_per_token() {
    // REFERENCE.md: Llama-2-7B holds 32 × 2 × 32 × 128 × 2 bytes = 512 KiB per token.
    let shape = ModelShape::uniform("llama2-7b", 32, 32, 32, 128, 4096, 11008);
    let f16 = CacheDtype::new(DtypeKind::F16);
    let g = CacheGeometry::new(&shape, None, f16, f16, 1, 16, 16, 0).unwrap();
    let c = DenseCache::new(&g, false).unwrap();
    assert_eq!(c.memory().kv_bytes_allocated, 16 * 524_288);
}

#[test]
fn paged_holds_ceil_len_over_block_blocks_and_frees_what_slides_out() {
    for (len, block, window, shared) in [
        (1, 16, None, 0),
        (16, 16, None, 0),
        (17, 16, None, 0),
        (100, 7, Some(30), 0),
        (64, 16, None, 40),
        (90, 8, Some(20), 50),
        (33, 16, None, 33),
    ] {
        let mut g = geom(2, 2, 8, 3, 128);
        g.block_size = block;
        g.shared_prefix = shared;
        g.windows = vec![window, None];
        let mut c = PagedCache::new(&g).unwrap();
        for pos in 0..len {
            for l in 0..2 {
                for s in 0..3 {
                    // Prefix tokens are identical across the batch, as the workloads make them.
                    let who = if pos < shared { 0 } else { s };
                    c.append(
                        l,
                        s,
                        &row(&g, l, who, pos, false),
                        &row(&g, l, who, pos, true),
                    )
                    .unwrap();
                }
            }
        }
        let blocks = contract_paged_blocks(&g, len);
        let m = c.memory();
        assert_eq!(
            m.kv_bytes_allocated,
            blocks * c.pool().block_bytes() as u64,
            "len {len} block {block} window {window:?} shared {shared}"
        );
        assert!(m.kv_bytes_used <= m.kv_bytes_allocated);
        c.reset();
        assert_eq!(c.pool().live_blocks(), 0, "reset leaks no block");
        assert_eq!(c.memory(), MemoryUse::default());
    }
}

#[test]
fn fork_shares_blocks_and_copies_on_write() {
    let mut g = geom(1, 1, 4, 1, 64);
    g.block_size = 4;
    let mut c = PagedCache::new(&g).unwrap();
    for pos in 0..6 {
        c.append(0, 0, &row(&g, 0, 0, pos, false), &row(&g, 0, 0, pos, true))
            .unwrap();
    }
    let child = c.fork(0).unwrap();
    let ids: Vec<BlockId> = c.blocks(0, 0).map(|(_, id)| id).collect();
    assert!(ids.iter().all(|&id| c.pool().refs(id) == 2));
    // The child writes position 6, inside the shared partial block: it gets a copy.
    c.append(0, child, &row(&g, 0, 9, 6, false), &row(&g, 0, 9, 6, true))
        .unwrap();
    let child_ids: Vec<BlockId> = c.blocks(child, 0).map(|(_, id)| id).collect();
    assert_eq!(child_ids[0], ids[0], "full blocks stay shared");
    assert_ne!(child_ids[1], ids[1], "the written block was copied");
    assert_eq!(c.pool().refs(ids[0]), 2);
    assert_eq!(c.pool().refs(ids[1]), 1);
    // The parent still sees its own rows; the child sees the parent's prefix then its own.
    let parent = decode(&c.view(0, 0, 0).k);
    assert_eq!(parent.len(), 6);
    let kid = decode(&c.view(0, child, 0).k);
    assert_eq!(kid.len(), 7);
    assert_eq!(kid[..6], parent[..]);
    assert_eq!(kid[6], row(&g, 0, 9, 6, false));
    c.free_sequence(child).unwrap();
    assert!(ids.iter().all(|&id| c.pool().refs(id) == 1));
    c.reset();
    assert_eq!(c.pool().live_blocks(), 0);
}

#[test]
fn residual_dtypes_refuse_paging_with_a_reason() {
    // KIVI with a sliding window is a spec rule (`spec::validate`), refused before any cache.
    let mut g = geom(1, 1, 64, 1, 64);
    let (k, v) = CacheDtype::kivi(DtypeKind::Int4, 32);
    g.k_dtype = k;
    g.v_dtype = v;
    let e = PagedCache::new(&g).err().unwrap();
    assert!(e.to_string().contains("residual"), "{e}");
}

#[test]
fn kivi_keeps_the_last_tokens_in_f16_and_flushes_whole_groups() {
    let mut g = geom(1, 1, 64, 1, 300);
    let (k, v) = CacheDtype::kivi(DtypeKind::Int4, 64);
    g.k_dtype = k;
    g.v_dtype = v;
    for concat in [false, true] {
        let mut c = DenseCache::new(&g, concat).unwrap();
        for pos in 0..161 {
            let r: Vec<f32> = (0..64)
                .map(|i| ((pos * 64 + i) % 17) as f32 / 17.0)
                .collect();
            c.append(0, 0, &r, &r).unwrap();
        }
        let view = c.view(0, 0, 0);
        // residual_split: 161 tokens with residual 64, group 32 → keys 128 quantized + 33 f16;
        // values (per token) 97 quantized + 64 f16.
        let f16_rows = |segs: &[Segment]| {
            segs.iter()
                .filter(|s| s.codec.dtype.kind == DtypeKind::F16)
                .map(|s| s.rows)
                .sum::<usize>()
        };
        assert_eq!(f16_rows(&view.k), 33);
        assert_eq!(f16_rows(&view.v), 64);
        assert_eq!(view.rows(), 161);
    }
}

/// Every (layer, seq, head)'s K and V rows, decoded, and the memory the cache holds.
fn contents(c: &dyn KvCache, g: &CacheGeometry) -> (Vec<Vec<Vec<f32>>>, MemoryUse) {
    let mut rows = Vec::new();
    for l in 0..g.layers {
        for s in 0..g.batch {
            for h in 0..g.kv_heads {
                let view = c.view(l, s, h);
                rows.push(decode(&view.k));
                rows.push(decode(&view.v));
            }
        }
    }
    (rows, c.memory())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn appending_tokens_in_runs_stores_what_appending_them_one_by_one_does(
        kv_heads in 1usize..4, batch in 1usize..3, len in 1usize..80, block in 1usize..20,
        runs in prop::collection::vec(1usize..40, 1..8), window in prop::option::of(1usize..40),
        shared in 0usize..40, int4 in any::<bool>(),
    ) {
        let mut g = geom(2, kv_heads, 32, batch, 80);
        g.block_size = block;
        g.shared_prefix = shared.min(len);
        g.windows = vec![window, None];
        if int4 {
            (g.k_dtype, g.v_dtype) = (CacheDtype::new(DtypeKind::Int4), CacheDtype::new(DtypeKind::Int8));
        }
        for strategy in ["concat", "contiguous", "paged"] {
            let (mut one, mut many) = (make(strategy, &g), make(strategy, &g));
            // As a workload fills: sequence by sequence, the shared prefix from sequence 0.
            for l in 0..g.layers {
                for s in 0..g.batch {
                    let src = |pos: usize| if pos < g.shared_prefix { 0 } else { s };
                    let (mut pos, mut r) = (0, 0);
                    while pos < len {
                        let n = runs[r % runs.len()].min(len - pos);
                        let (mut k, mut v) = (Vec::new(), Vec::new());
                        for p in pos..pos + n {
                            let (kr, vr) = (row(&g, l, src(p), p, false), row(&g, l, src(p), p, true));
                            one.append(l, s, &kr, &vr).unwrap();
                            k.extend(kr);
                            v.extend(vr);
                        }
                        many.append_tokens(l, s, n, &k, &v).unwrap();
                        pos += n;
                        r += 1;
                    }
                }
            }
            prop_assert_eq!(contents(one.as_ref(), &g), contents(many.as_ref(), &g), "{}", strategy);
            // Past the end: refused as the token that does not fit would be, the rest kept.
            let more = 80 - len + 1;
            let k = row(&g, 1, 0, 0, false).repeat(more);
            let v = row(&g, 1, 0, 0, true).repeat(more);
            let err = many.append_tokens(1, 0, more, &k, &v).unwrap_err();
            prop_assert!(matches!(err, CacheError::Full { .. }), "{}", err);
            prop_assert_eq!(many.len(1, 0), 80);
        }
    }
}
