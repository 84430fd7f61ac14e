use super::decode::{decode_attention, DecodeJob, Together, Walk};
use super::prefill::{prefill_attention_isa, PrefillShape};
use super::*;
use crate::cache::{CacheGeometry, DenseCache, HeadView, KvCache, PagedCache};
use crate::reference;
use crate::synth;
use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};
use proptest::prelude::*;

fn dtypes() -> Vec<(CacheDtype, CacheDtype)> {
    use DtypeKind::*;
    let mut v: Vec<(CacheDtype, CacheDtype)> =
        [F32, F16, Bf16, Fp8E4m3, Fp8E5m2, Int8, Int4, Nf4, Int2]
            .into_iter()
            .map(|k| (CacheDtype::new(k), CacheDtype::new(k)))
            .collect();
    v.push((CacheDtype::q8_0(), CacheDtype::q4_0()));
    v.push(CacheDtype::kivi(Int4, 64));
    // fp8 with a scale per head vector beside its default one per tensor.
    let token = CacheDtype::new(Fp8E4m3).with_group(64).unwrap();
    v.push((token, token));
    v
}

fn geometry(
    kv: usize,
    d: usize,
    len: usize,
    k: CacheDtype,
    v: CacheDtype,
    block: usize,
) -> CacheGeometry {
    let shape = ModelShape::uniform("t", 1, kv as u32, kv as u32, d as u32, 64, 64);
    CacheGeometry::new(&shape, None, k, v, 1, len as u32, block as u32, 0).unwrap()
}

fn filled(cache: &mut dyn KvCache, kv: usize, d: usize, len: usize, seed: u64) {
    for pos in 0..len {
        let mut k = vec![0.0; kv * d];
        let mut v = vec![0.0; kv * d];
        synth::fill(synth::stream(seed, 1, pos as u64, 0, 0), 1.0, &mut k);
        synth::fill(synth::stream(seed, 2, pos as u64, 0, 0), 1.0, &mut v);
        // A few outlier channels, as real keys have.
        k[0] *= 4.0;
        cache.append(0, 0, &k, &v).unwrap();
    }
}

fn query(heads: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut q = vec![0.0; heads * d];
    synth::fill(synth::stream(seed, 3, 0, 0, 0), 2.0, &mut q);
    q
}

fn decoded(segs: &[crate::cache::Segment]) -> Vec<Vec<f64>> {
    let mut rows = Vec::new();
    for s in segs {
        let c = s.codec;
        for r in s.row0..s.row0 + s.rows {
            let u = r / c.unit_tokens;
            let mut out = vec![0.0f32; c.head_dim];
            c.decode_row(
                &s.bytes[u * c.unit_bytes..(u + 1) * c.unit_bytes],
                r % c.unit_tokens,
                &mut out,
            );
            rows.push(out.iter().map(|&x| x as f64).collect());
        }
    }
    rows
}

/// Decode attention of `heads` query heads over one KV head's view, on one ISA.
fn run(view: &HeadView, q: &[f32], heads: usize, isa: Isa) -> Vec<f32> {
    run_walked(view, q, heads, Walk::CALIBRATED, isa)
}

/// [`run`] walked as `walk` says.
fn run_walked(view: &HeadView, q: &[f32], heads: usize, walk: Walk, isa: Isa) -> Vec<f32> {
    let d = q.len() / heads;
    let scaled: Vec<f32> = q.iter().map(|x| x / (d as f32).sqrt()).collect();
    let mut out = vec![0.0; q.len()];
    let mut jobs = vec![DecodeJob {
        view: view.clone(),
        q: &scaled,
        out: &mut out,
    }];
    decode_attention(&mut jobs, heads, Together { jobs: 1, walk }, isa);
    out
}

/// The f64 attention over exactly the rows the cache holds (dequantized).
fn exact(view: &HeadView, q: &[f32], heads: usize) -> Vec<f64> {
    let d = q.len() / heads;
    let (k, v) = (decoded(&view.k), decoded(&view.v));
    (0..heads)
        .flat_map(|h| {
            let qh: Vec<f64> = q[h * d..(h + 1) * d].iter().map(|&x| x as f64).collect();
            reference::attend(&qh, &k, &v)
        })
        .collect()
}

fn max_rel(a: &[f32], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-30);
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
        / scale
}

#[test]
fn every_dtype_and_isa_matches_f64_attention_over_the_stored_rows() {
    for (k, v) in dtypes() {
        // 8 and 32 heads take the wide (tile-GEMM) path where AVX-512 applies.
        for (heads, len) in [(1usize, 1usize), (4, 37), (8, 700), (32, 130)] {
            let g = geometry(1, 64, len, k, v, 16);
            let mut c = DenseCache::new(&g, false).unwrap();
            filled(&mut c, 1, 64, len, 11);
            let view = c.view(0, 0, 0);
            let q = query(heads, 64, 5);
            let want = exact(&view, &q, heads);
            for isa in Isa::available() {
                let got = run(&view, &q, heads, isa);
                let err = max_rel(&got, &want);
                assert!(
                    err < 2e-5,
                    "{:?}/{:?} {isa:?} heads {heads} len {len}: {err}",
                    k.kind,
                    v.kind
                );
            }
        }
    }
}

#[test]
fn any_tile_and_prefetch_of_a_walk_give_the_f64_attention() {
    // A contiguous head walked in tiles of 64, 16 and 5 rows, asking ahead or not, on the
    // fused (4 heads) and the wide (8 heads) paths: each the exact attention over its rows.
    let dt = CacheDtype::new(DtypeKind::F16);
    let g = geometry(1, 64, 300, dt, dt, 16);
    let mut c = DenseCache::new(&g, false).unwrap();
    filled(&mut c, 1, 64, 300, 12);
    let view = c.view(0, 0, 0);
    for heads in [4usize, 8] {
        let q = query(heads, 64, 6);
        let want = exact(&view, &q, heads);
        for isa in Isa::available() {
            for (rows, prefetch) in [(0, Some(true)), (16, Some(false)), (5, None)] {
                let got = run_walked(&view, &q, heads, Walk { rows, prefetch }, isa);
                let err = max_rel(&got, &want);
                assert!(err < 2e-5, "{isa:?} heads {heads} rows {rows}: {err}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn block_size_and_thread_split_do_not_change_the_result(
        len in 1usize..600, block in 1usize..40, heads in prop::sample::select(vec![1usize, 2, 3, 8]),
        kind in prop::sample::select(vec![DtypeKind::F32, DtypeKind::F16, DtypeKind::Int8, DtypeKind::Int4]),
    ) {
        let dt = CacheDtype::new(kind);
        let g = geometry(2, 32, len, dt, dt, block);
        let mut dense = DenseCache::new(&g, false).unwrap();
        let mut paged = PagedCache::new(&g).unwrap();
        filled(&mut dense, 2, 32, len, 3);
        filled(&mut paged, 2, 32, len, 3);
        let q = query(heads, 32, 9);
        for head in 0..2 {
            let a = run(&dense.view(0, 0, head), &q, heads, Isa::detect());
            let b = run(&paged.view(0, 0, head), &q, heads, Isa::detect());
            let want = exact(&dense.view(0, 0, head), &q, heads);
            prop_assert!(max_rel(&a, &want) < 2e-5);
            prop_assert!(max_rel(&b, &want) < 2e-5);
        }
    }
}

#[test]
fn simd_tiles_equal_the_scalar_twin_on_odd_row_counts_and_head_counts() {
    for isa in Isa::available().into_iter().skip(1) {
        simd_tiles_equal_the_scalar_twin(isa);
    }
}

fn simd_tiles_equal_the_scalar_twin(isa: Isa) {
    use DtypeKind::Int4;
    // Beside every key format: 4-bit codes in each scale layout the value kernels tell
    // apart (symmetric, groups of one and two 32-channel chunks and of the whole row, f32
    // scales).
    let mut formats: Vec<CacheDtype> = dtypes().into_iter().map(|(k, _)| k).collect();
    formats.extend([
        CacheDtype::q4_0(),
        CacheDtype::new(Int4).with_group(64).unwrap(),
        CacheDtype::new(Int4).with_group(128).unwrap(),
        CacheDtype {
            scale_bytes: 4,
            ..CacheDtype::new(Int4)
        },
    ]);
    // Head dims 128 and 64 have kernels of their own (q held in registers), 96 takes the
    // general one.
    for (k, d) in formats
        .into_iter()
        .flat_map(|k| [(k, 128), (k, 64), (k, 96)])
    {
        let group = k.group_size.unwrap_or(d as u32) as usize;
        if k.axis != kvbench_planner::GroupAxis::Token || d % group != 0 {
            continue;
        }
        // 37 rows: every block shape (16, 8, 4 rows) and the 1-row tail.
        let g = geometry(1, d, 40, k, k, 16);
        let mut c = DenseCache::new(&g, false).unwrap();
        filled(&mut c, 1, d, 40, 2);
        let view = c.view(0, 0, 0);
        let seg = &view.k[0];
        for heads in [1usize, 2, 3, 5, 8] {
            let q = query(heads, d, 4);
            let stride = 40;
            let (mut a, mut b) = (vec![0.0; heads * stride], vec![0.0; heads * stride]);
            Isa::Scalar.scores(seg, 1, 37, &q, heads, &mut a, stride);
            isa.scores(seg, 1, 37, &q, heads, &mut b, stride);
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + x.abs()),
                    "{:?} {isa:?} d {d} scores {x} vs {y}",
                    k.kind
                );
            }
            // The rows cut into pieces, as a paged tile hands them over, scored with the
            // query prepared once: the very scores of the calls that prepare it each time.
            let prepared = isa.code_query(seg.codec, &q, heads);
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx2 {
                let codes = !k.kind.is_float() && avx2::supports(seg.codec);
                assert_eq!(prepared.is_some(), codes, "{:?} d {d}", k.kind);
            }
            if let Some(prepared) = &prepared {
                let pieces = [(seg, 1, 3), (seg, 4, 21), (seg, 25, 13)];
                let mut each = vec![0.0; heads * stride];
                isa.scores_pieces(&pieces, &q, None, heads, &mut each, stride);
                let mut once = vec![0.0; heads * stride];
                isa.scores_pieces(&pieces, &q, Some(prepared), heads, &mut once, stride);
                assert_eq!(each, once, "{:?} {isa:?} d {d} prepared scores", k.kind);
            }
            let p: Vec<f32> = (0..heads * stride).map(|i| (i % 7) as f32 * 0.1).collect();
            let (mut a, mut b) = (vec![0.5; heads * d], vec![0.5; heads * d]);
            Isa::Scalar.accumulate(seg, 1, 37, &p, heads, stride, &mut a);
            isa.accumulate(seg, 1, 37, &p, heads, stride, &mut b);
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + x.abs()),
                    "{:?} d {d} accumulate {x} vs {y}",
                    k.kind
                );
            }
            // The same rows cut into pieces, as a paged tile hands them over.
            let pieces = [(seg, 1, 3), (seg, 4, 21), (seg, 25, 13)];
            let mut c = vec![0.5; heads * d];
            isa.accumulate_pieces(&pieces, &p, heads, stride, &mut c);
            for (x, y) in a.iter().zip(&c) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + x.abs()),
                    "{:?} d {d} accumulate_pieces {x} vs {y}",
                    k.kind
                );
            }
        }
    }
}

#[test]
fn wide_kernels_equal_their_scalar_twins() {
    for isa in Isa::available().into_iter().skip(1) {
        for (k, _) in dtypes() {
            if k.axis != kvbench_planner::GroupAxis::Token {
                continue;
            }
            let (len, d) = (29usize, 128usize);
            let g = geometry(1, d, len, k, k, 8);
            let mut c = PagedCache::new(&g).unwrap();
            filled(&mut c, 1, d, len, 6);
            let view = c.view(0, 0, 0);
            // Rows 3..26, across paged blocks of 8.
            let mut pieces = Vec::new();
            let mut at = 0;
            for s in &view.k {
                let (lo, hi) = (at.max(3), (at + s.rows).min(26));
                if lo < hi {
                    pieces.push((s, s.row0 + lo - at, hi - lo));
                }
                at += s.rows;
            }
            let n = 23;
            let (mut a, mut b) = (vec![0.0; n * d], vec![0.0; n * d]);
            Isa::Scalar.decode_tile(&pieces, &mut a);
            isa.decode_tile(&pieces, &mut b);
            // Equal up to rounding: the SIMD loaders read integer codes centred.
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 1e-6 * (1.0 + x.abs()),
                    "{:?} {isa:?} decode_tile {x} vs {y}",
                    k.kind
                );
            }
            // Padded to the ISA's vector of heads: 5 → 8 and 40 → 40 on AVX2 take its
            // one-vector blocks too.
            for heads in [5usize, 16, 32, 40] {
                let hp = heads.next_multiple_of(isa.wide_lanes());
                let qt = query(hp, d, 8);
                let (mut s1, mut s2) = (vec![0.0; n * hp], vec![0.0; n * hp]);
                Isa::Scalar.scores_wide(&a, n, d, &qt, hp, &mut s1);
                isa.scores_wide(&a, n, d, &qt, hp, &mut s2);
                for (x, y) in s1.iter().zip(&s2) {
                    assert!(
                        (x - y).abs() <= 1e-4 * (1.0 + x.abs()),
                        "scores_wide {x} vs {y}"
                    );
                }
                // A running max that some columns exceed and some do not; one column fresh.
                let mut m1: Vec<f32> = (0..hp).map(|h| (h % 3) as f32 - 1.0).collect();
                m1[0] = f32::NEG_INFINITY;
                // Column 1 fully masked and fresh (as a causal prefill tile can be), column 2
                // partly masked.
                m1[1] = f32::NEG_INFINITY;
                for i in 0..n {
                    s1[i * hp + 1] = f32::NEG_INFINITY;
                    s2[i * hp + 1] = f32::NEG_INFINITY;
                    if i % 2 == 0 {
                        s1[i * hp + 2] = f32::NEG_INFINITY;
                        s2[i * hp + 2] = f32::NEG_INFINITY;
                    }
                }
                let mut l1: Vec<f32> = (0..hp).map(|h| 1.0 + h as f32).collect();
                let (mut m2, mut l2) = (m1.clone(), l1.clone());
                let (mut c1, mut c2) = (vec![0.0; hp], vec![0.0; hp]);
                Isa::Scalar.softmax_wide(&mut s1, n, hp, &mut m1, &mut l1, &mut c1);
                isa.softmax_wide(&mut s2, n, hp, &mut m2, &mut l2, &mut c2);
                // The scores differ in their last bits (summation order), so compare with the
                // tolerance those bits carry through exp.
                let pairs = s1.iter().zip(&s2).chain(l1.iter().zip(&l2));
                for (x, y) in pairs.chain(c1.iter().zip(&c2)).chain(m1.iter().zip(&m2)) {
                    assert!(
                        x == y || (x - y).abs() <= 2e-5 * (1.0 + x.abs()),
                        "softmax_wide {x} vs {y}"
                    );
                }
                let (mut o1, mut o2) = (vec![0.25; heads * d], vec![0.25; heads * d]);
                Isa::Scalar.accumulate_wide(&a, n, d, &s1, hp, heads, &c1, &mut o1);
                isa.accumulate_wide(&a, n, d, &s1, hp, heads, &c1, &mut o2);
                for (x, y) in o1.iter().zip(&o2) {
                    assert!(
                        (x - y).abs() <= 1e-4 * (1.0 + x.abs()),
                        "accumulate_wide {x} vs {y}"
                    );
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn sum16_puts_each_vectors_sum_in_its_lane() {
    if !Isa::available().contains(&Isa::Avx512) {
        return;
    }
    // Distinct small integers: every sum is exact, so any misrouted lane shows.
    let v: [[f32; 16]; 16] =
        std::array::from_fn(|i| std::array::from_fn(|j| (i * 37 + j * j) as f32));
    // SAFETY: AVX-512 is available (checked above).
    let got = unsafe { avx512::sum16_of(&v) };
    for (i, g) in got.iter().enumerate() {
        assert_eq!(*g, v[i].iter().sum::<f32>(), "lane {i}");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn fp8_bit_decode_equals_the_codec_table() {
    use crate::codec::fp8::Fp8;
    if !Isa::available().contains(&Isa::Avx512) {
        return;
    }
    for fmt in [Fp8::E4m3, Fp8::E5m2] {
        let table = fmt.table();
        for base in (0..256).step_by(16) {
            let codes: [u8; 16] = std::array::from_fn(|i| (base + i) as u8);
            // SAFETY: AVX-512 is available (checked above).
            let got = unsafe { avx512::fp8_decode16(fmt, &codes) };
            for (c, g) in codes.iter().zip(got) {
                // e5m2 codes with an all-ones exponent are IEEE inf/NaN; the saturating
                // encoder never writes them (see `fp8_lanes`).
                if fmt == Fp8::E5m2 && (c & 0x7c) == 0x7c {
                    continue;
                }
                assert_eq!(g.to_bits(), table[*c as usize].to_bits(), "{fmt:?} {c:#x}");
            }
        }
    }
}

#[test]
fn softmax_row_equals_its_scalar_twin() {
    for isa in Isa::available().into_iter().skip(1) {
        for n in [1usize, 15, 16, 17, 64] {
            // A fresh head, a running max below the tile's and one above it.
            for start in [f32::NEG_INFINITY, 0.5, 10.0] {
                let x: Vec<f32> = (0..n).map(|i| ((i * 7) % 13) as f32 * 0.7 - 3.0).collect();
                let (mut a, mut b) = (x.clone(), x);
                let (mut m1, mut l1, mut m2, mut l2) = (start, 2.0f32, start, 2.0f32);
                let c1 = Isa::Scalar.softmax_row(&mut a, &mut m1, &mut l1);
                let c2 = isa.softmax_row(&mut b, &mut m2, &mut l2);
                assert_eq!((m1, c1), (m2, c2), "{isa:?} n {n} start {start}");
                for (x, y) in a.iter().zip(&b).chain([(&l1, &l2)]) {
                    assert!(
                        (x - y).abs() <= 1e-6 * (1.0 + x.abs()),
                        "{isa:?} n {n}: {x} vs {y}"
                    );
                }
            }
        }
    }
}

#[test]
fn fast_exp_is_accurate_over_the_softmax_range() {
    // Rounding x·log2(e) to f32 costs |x|·2^-24 relative; the polynomial ~1e-7.
    let inputs: Vec<f32> = (0..8_000).map(|i| -(i as f32) * 0.01).collect();
    let mut xs = inputs.clone();
    exp_inplace(&mut xs);
    for ((x, e), i) in xs.iter().zip(&inputs).zip(&inputs) {
        let w = (*i as f64).exp();
        let err = (*x as f64 - w).abs() / w;
        assert!(
            err <= 2e-7 * (1.0 + e.abs() as f64),
            "exp({i}) = {x} vs {w}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn prefill_equals_causal_reference_attention(
        t in 1usize..600, kv in 1usize..3, group in prop::sample::select(vec![1usize, 4]),
        window in prop::option::of(1usize..40),
    ) {
        let (hq, d) = (kv * group, 16);
        let mut q = vec![0.0; t * hq * d];
        let mut k = vec![0.0; t * kv * d];
        let mut v = vec![0.0; t * kv * d];
        synth::fill(synth::stream(1, 1, 0, 0, 0), 2.0, &mut q);
        synth::fill(synth::stream(1, 2, 0, 0, 0), 1.0, &mut k);
        synth::fill(synth::stream(1, 3, 0, 0, 0), 1.0, &mut v);
        let shape = PrefillShape { q_heads: hq, kv_heads: kv, head_dim: d, window };
        for isa in Isa::available() {
        let mut out = vec![0.0; t * hq * d];
        prefill_attention_isa(&shape, t, &q, &k, &v, &mut out, isa);
        for i in 0..t {
            let lo = window.map_or(0, |w| (i + 1).saturating_sub(w));
            for h in 0..hq {
                let kh = h / group;
                let rows = |x: &[f32]| (lo..=i).map(|j| x[(j * kv + kh) * d..][..d].iter().map(|&a| a as f64).collect()).collect::<Vec<Vec<f64>>>();
                let qh: Vec<f64> = q[(i * hq + h) * d..][..d].iter().map(|&a| a as f64).collect();
                let want = reference::attend(&qh, &rows(&k), &rows(&v));
                let got = &out[(i * hq + h) * d..][..d];
                prop_assert!(max_rel(got, &want) < 2e-5, "{:?} t {} i {} h {}", isa, t, i, h);
            }
        }
        }
    }
}

#[test]
fn every_fused_format_has_a_16_lane_kernel() {
    // A format the AVX-512 kernels refuse silently runs the AVX2 ones (half the width):
    // fp8 at its default one scale per tensor did, at 0.9-1.1x AVX2 instead of ~3x.
    use crate::codec::Codec;
    for (k, _) in dtypes() {
        let codec = Codec::new(k, 128).unwrap();
        // KIVI's channel groups and integer per-tensor layouts keep to the AVX2 path.
        let int_per_tensor =
            k.scale_bytes == 0 && !k.kind.is_float() && !k.to_string().starts_with("fp8");
        if k.residual > 0 || int_per_tensor {
            continue;
        }
        assert!(avx512::supports(&codec), "{k} has no AVX-512 kernel");
    }
}

#[test]
fn the_tile_prefetch_changes_no_result() {
    // A prefetch only moves memory earlier: outputs are bit-identical with it off, on every
    // ISA, for the fused and the wide (32-head) paths, over paged blocks.
    let dt = CacheDtype::new(DtypeKind::F16);
    let g = geometry(1, 64, 300, dt, dt, 16);
    let mut paged = PagedCache::new(&g).unwrap();
    let mut dense = DenseCache::new(&g, false).unwrap();
    filled(&mut paged, 1, 64, 300, 4);
    filled(&mut dense, 1, 64, 300, 4);
    for cache in [&paged as &dyn KvCache, &dense] {
        for heads in [1usize, 32] {
            let q = query(heads, 64, 8);
            for isa in Isa::available() {
                let on = run(&cache.view(0, 0, 0), &q, heads, isa);
                set_tile_prefetch(false, false);
                let off = run(&cache.view(0, 0, 0), &q, heads, isa);
                set_tile_prefetch(true, true);
                assert_eq!(on, off, "{isa:?} heads {heads}");
            }
        }
    }
}

#[test]
fn the_rows_asked_ahead_are_every_line_of_them_once_in_a_few_bursts() {
    // 30 rows from row 5 of block 1 on cross blocks 1, 2 and 3 (16-token blocks of int8
    // rows, 68 bytes at d 64): their K and V bytes are asked for line by line, in order,
    // in at most BURSTS bursts of equal size.
    use super::decode::Ahead;
    let dt = CacheDtype::new(DtypeKind::Int8);
    let g = geometry(2, 64, 100, dt, dt, 16);
    let mut paged = PagedCache::new(&g).unwrap();
    filled(&mut paged, 2, 64, 100, 3);
    let view = paged.view(0, 0, 1);
    let row = view.k[0].codec.unit_bytes;
    assert_eq!(row, 68);
    let mut want = Vec::new();
    for segs in [&view.k, &view.v] {
        for (b, rows) in [(1usize, 5..16usize), (2, 0..16), (3, 0..3)] {
            let base = segs[b].bytes.as_ptr();
            for off in (rows.start * row..rows.end * row).step_by(64) {
                want.push(base.wrapping_add(off));
            }
        }
    }
    let mut ahead = Ahead::default();
    ahead.ask([(&view.k, 1, 5, 30), (&view.v, 1, 5, 30)]);
    let per = want.len().div_ceil(Ahead::BURSTS);
    let mut got = Vec::new();
    for _ in 0..Ahead::BURSTS {
        let before = got.len();
        ahead.burst_with(|p| got.push(p));
        assert!(
            got.len() - before <= per,
            "a burst of {}",
            got.len() - before
        );
    }
    assert_eq!(got, want);
    ahead.burst_with(|p| got.push(p));
    assert_eq!(got.len(), want.len(), "nothing is asked twice");
}

#[test]
fn heads_read_together_get_the_results_of_heads_read_one_by_one() {
    // A paged block holds every KV head's rows, so a sequence's heads are attended in one
    // pass over the blocks; each head must still get exactly what it gets on its own (the
    // same tiles in the same order), on the fused and the wide paths, for any block size
    // and a range that starts and ends inside blocks.
    use super::decode::{attend_heads_together, attend_rows_in_tiles, together_tile};
    let kv = 4;
    // KIVI's f16 residual has no paged form.
    for (k, v) in dtypes().into_iter().filter(|(k, _)| k.residual == 0) {
        for block in [1usize, 7, 16, 64] {
            let g = geometry(kv, 64, 300, k, v, block);
            let mut paged = PagedCache::new(&g).unwrap();
            filled(&mut paged, kv, 64, 300, 6);
            for heads in [1usize, 3, 8] {
                let qs: Vec<Vec<f32>> = (0..kv).map(|h| query(heads, 64, 20 + h as u64)).collect();
                let mut outs = vec![vec![0.0f32; heads * 64]; kv];
                let jobs: Vec<DecodeJob> = outs
                    .iter_mut()
                    .zip(&qs)
                    .enumerate()
                    .map(|(h, (out, q))| DecodeJob {
                        view: paged.view(0, 0, h),
                        q,
                        out,
                    })
                    .collect();
                // Tiles of one block, or of 64 rows across blocks (rows 0 and 64).
                for (isa, rows) in Isa::available().into_iter().flat_map(|i| [(i, 0), (i, 64)]) {
                    for (b, e) in [(0usize, 300usize), (13, 211)] {
                        let walk = Walk {
                            rows,
                            prefetch: None,
                        };
                        let together = attend_heads_together(&jobs, heads, (b, e), walk, isa);
                        let tile = together_tile(&jobs[0].view, rows);
                        assert_eq!(tile, if rows == 0 { block.clamp(16, 64) } else { rows });
                        for (h, part) in together.iter().enumerate() {
                            let view = &jobs[h].view;
                            let alone = attend_rows_in_tiles(
                                view,
                                jobs[h].q,
                                heads,
                                (b, e),
                                tile,
                                None,
                                isa,
                            );
                            assert_eq!(
                                part.acc, alone.acc,
                                "{k}/{v} block {block} heads {heads} {isa:?} rows {rows}"
                            );
                            assert_eq!(part.max, alone.max);
                            assert_eq!(part.sum, alone.sum);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_paged_layer_decodes_every_head_as_the_f64_reference_does() {
    // Through `decode_layer`, which reads a paged cache's heads together: each KV head's
    // output against f64 attention over its own stored rows.
    use super::decode::decode_layer;
    let (kv, d, len) = (4usize, 64usize, 1000usize);
    for kind in [DtypeKind::F16, DtypeKind::Int8] {
        let dt = CacheDtype::new(kind);
        let g = geometry(kv, d, len, dt, dt, 16);
        let mut paged = PagedCache::new(&g).unwrap();
        filled(&mut paged, kv, d, len, 8);
        for group in [1usize, 8] {
            let q = query(kv * group, d, 3);
            let scaled: Vec<f32> = q.iter().map(|x| x / (d as f32).sqrt()).collect();
            let mut out = vec![0.0f32; q.len()];
            decode_layer(
                &mut paged,
                0,
                1,
                kv,
                group,
                &scaled,
                &mut out,
                Walk::CALIBRATED,
                Isa::detect(),
            )
            .unwrap();
            for h in 0..kv {
                let qh = &q[h * group * d..(h + 1) * group * d];
                let want = exact(&paged.view(0, 0, h), qh, group);
                let got = &out[h * group * d..(h + 1) * group * d];
                assert!(
                    max_rel(got, &want) < 2e-5,
                    "{kind:?} group {group} head {h}"
                );
            }
        }
    }
}

#[test]
fn heads_are_read_together_only_past_the_cache() {
    use super::reads_past_cache;
    // 32 MiB LLC: a step of 16 MiB stays in cache (head by head), 32 MiB and more does not.
    assert!(!reads_past_cache(16 << 20, 32 << 20));
    assert!(reads_past_cache(32 << 20, 32 << 20));
    assert!(reads_past_cache(1 << 30, 32 << 20));
    // Unknown cache: together (the main-memory case, which the % of limit rows measure).
    assert!(reads_past_cache(1 << 10, 0));
}

#[cfg(target_arch = "x86_64")]
#[test]
fn integer_dot_scores_equal_the_exact_scores_to_f32_rounding() {
    use super::vnni::{self, IntQuery};
    if !vnni::detected() {
        eprintln!("this CPU has no AVX-512 VNNI: the integer-dot kernel is not run here");
        return;
    }
    use DtypeKind::*;
    let f32_scales = |dt: CacheDtype| CacheDtype {
        scale_bytes: 4,
        ..dt
    };
    let formats = [
        CacheDtype::new(Int8),
        CacheDtype::new(Int4),
        CacheDtype::q8_0(),
        CacheDtype::q4_0(),
        f32_scales(CacheDtype::new(Int4)),
        CacheDtype::new(Int4).with_group(16).unwrap(),
        CacheDtype::new(Int8).with_group(16).unwrap(),
        CacheDtype::new(Int4).with_group(64).unwrap(),
    ];
    let mut worst = 0.0f64;
    for dt in formats {
        for d in [64usize, 128, 256] {
            let g = geometry(1, d, 40, dt, dt, 16);
            let mut c = DenseCache::new(&g, false).unwrap();
            filled(&mut c, 1, d, 40, 9);
            let view = c.view(0, 0, 0);
            let seg = &view.k[0];
            let rows = decoded(&view.k);
            for heads in 1..=7usize {
                let q = query(heads, d, 7 + heads as u64);
                let iq = IntQuery::new(seg.codec, &q, heads)
                    .unwrap_or_else(|| panic!("{dt:?} d {d}: no integer dot"));
                // Rows 1..38 in three pieces (a paged tile's shape), out of order of size.
                let pieces = [(seg, 1, 3), (seg, 4, 21), (seg, 25, 13)];
                let stride = 40;
                let mut got = vec![f32::NAN; heads * stride];
                // SAFETY: `detected` holds; the pieces are in `iq`'s format.
                unsafe { vnni::scores(&pieces, &iq, &mut got, stride) };
                for h in 0..heads {
                    let qh = &q[h * d..(h + 1) * d];
                    for i in 0..37 {
                        let k = &rows[1 + i];
                        let exact: f64 = qh.iter().zip(k).map(|(&a, b)| a as f64 * b).sum();
                        let size: f64 = qh.iter().zip(k).map(|(&a, b)| (a as f64 * b).abs()).sum();
                        let err = (got[h * stride + i] as f64 - exact).abs() / size;
                        worst = worst.max(err);
                        assert!(
                            err < 1e-6,
                            "{dt:?} d {d} heads {heads} row {i}: {} vs {exact} ({err:e})",
                            got[h * stride + i]
                        );
                    }
                }
            }
        }
    }
    eprintln!("worst error relative to Σ|q·k|: {worst:e}");
}

#[test]
fn a_long_part_of_integer_keys_decodes_as_the_f64_reference_does() {
    use super::decode::attend_rows;
    use DtypeKind::*;
    let d = 128;
    // One query head per KV head (MHA) and four (GQA-8 of 32): int4 keys take the integer
    // dot at both, int8 keys at one head only (Isa::int_query).
    for (dt, heads) in [
        (CacheDtype::new(Int8), 1),
        (CacheDtype::new(Int8), 4),
        (CacheDtype::new(Int4), 1),
        (CacheDtype::new(Int4), 4),
        (CacheDtype::q4_0(), 1),
        (CacheDtype::q4_0(), 3),
    ] {
        let len = 1000;
        let g = geometry(1, d, len, dt, dt, 16);
        let mut c = DenseCache::new(&g, false).unwrap();
        filled(&mut c, 1, d, len, 21);
        let view = c.view(0, 0, 0);
        let q = query(heads, d, 8);
        let want = exact(&view, &q, heads);
        let scaled: Vec<f32> = q.iter().map(|x| x / (d as f32).sqrt()).collect();
        for isa in Isa::available() {
            // One part over every row: long enough for the integer dot where the CPU has it.
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx512 && super::vnni::detected() {
                let int_dot = isa.int_query(view.k[0].codec, &scaled, heads, len);
                assert_eq!(int_dot.is_some(), heads == 1 || dt.kind == Int4);
            }
            let mut got = vec![0.0f32; heads * d];
            attend_rows(&view, &scaled, heads, 0, len, isa).finish(&mut got);
            let err = max_rel(&got, &want);
            assert!(err < 2e-5, "{:?} {heads} heads {isa:?}: {err}", dt.kind);
        }
    }
}
