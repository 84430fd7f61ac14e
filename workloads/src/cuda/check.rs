//! Verification of an attention workload's outputs against the f64 reference, on the host:
//! the GPU path and the emulator test hand it the outputs they read back.

use super::plan::CudaPlan;
use super::reference::{self, ErrorSum, Tensor};
use crate::Verification;
use rayon::prelude::*;

/// The outputs of one checked layer after prefill and every decode step.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerOutputs {
    pub layer: u32,
    /// Last decode step, [batch][q_heads][head_dim] (ignored when gen = 0).
    pub decode: Vec<f32>,
    /// Prefill attention, [batch][prefill_queries][q_heads][head_dim].
    pub prefill: Vec<f32>,
}

/// Layers and sequences the check samples: first and last of each.
pub fn checked(n: u32) -> Vec<u32> {
    let mut v = vec![0, n.saturating_sub(1)];
    v.dedup();
    v
}

/// Compare sampled outputs (first and last sequence; prefill's first, middle and last computed
/// positions; the last decode step; every query head) with the f64 reference over the stored
/// values (kernel bound) and over the exact inputs (dtype bound). Every element of the given
/// outputs must be finite (they were poisoned with NaN before the run).
pub fn verify_outputs(
    plan: &CudaPlan,
    seed: u64,
    len: u32,
    outputs: &[LayerOutputs],
) -> Verification {
    let p = plan;
    let (hd, qh, n_pre) = (
        p.head_dim as usize,
        p.q_heads as usize,
        p.prefill_queries as usize,
    );
    let mut exact = ErrorSum::default();
    let mut stored = ErrorSum::default();
    for out in outputs {
        if p.gen > 0 {
            exact.non_finite += non_finite(&out.decode);
        }
        if n_pre > 0 {
            exact.non_finite += non_finite(&out.prefill);
        }
        let (kkey, vkey, qkey) = (
            reference::stream_key(seed, out.layer, Tensor::K),
            reference::stream_key(seed, out.layer, Tensor::V),
            reference::stream_key(seed, out.layer, Tensor::Q),
        );
        for b in checked(p.batch) {
            let rows: Vec<_> = (0..p.kv_heads)
                .into_par_iter()
                .map(|kvh| {
                    let (ke, ks) = reference::cache_rows(
                        kkey,
                        p.kernel.k_codec,
                        b,
                        kvh,
                        len,
                        p.head_dim,
                        p.shared_prefix,
                    );
                    let (ve, vs) = reference::cache_rows(
                        vkey,
                        p.kernel.v_codec,
                        b,
                        kvh,
                        len,
                        p.head_dim,
                        p.shared_prefix,
                    );
                    [
                        to_rows(&ke, hd),
                        to_rows(&ks, hd),
                        to_rows(&ve, hd),
                        to_rows(&vs, hd),
                    ]
                })
                .collect();
            let first = p.prompt - p.prefill_queries;
            let mut picks = if n_pre > 0 {
                vec![0, n_pre / 2, n_pre - 1]
            } else {
                vec![]
            };
            picks.dedup();
            let mut jobs: Vec<(u32, usize, &[f32])> = Vec::new();
            for i in picks {
                for h in 0..qh {
                    let at = ((b as usize * n_pre + i) * qh + h) * hd;
                    jobs.push((first + i as u32, h, &out.prefill[at..at + hd]));
                }
            }
            if p.gen > 0 {
                for h in 0..qh {
                    let at = (b as usize * qh + h) * hd;
                    jobs.push((len - 1, h, &out.decode[at..at + hd]));
                }
            }
            let group = p.group() as usize;
            let results: Vec<_> = jobs
                .into_par_iter()
                .map(|(pos, h, got)| {
                    let q: Vec<f64> = reference::query(qkey, b, pos, h as u32, p.head_dim)
                        .iter()
                        .map(|x| *x as f64)
                        .collect();
                    let [ke, ks, ve, vs] = &rows[h / group];
                    let n = pos as usize + 1;
                    (
                        got,
                        crate::reference::attend(&q, &ke[..n], &ve[..n]),
                        crate::reference::attend(&q, &ks[..n], &vs[..n]),
                    )
                })
                .collect();
            for (got, want_exact, want_stored) in results {
                exact.add(got, &want_exact);
                stored.add(got, &want_stored);
            }
        }
    }
    let bound =
        reference::dtype_bound(p.kernel.k_codec).max(reference::dtype_bound(p.kernel.v_codec));
    let (e, k) = (exact.rel_error(), stored.rel_error());
    let mut detail = Vec::new();
    if exact.non_finite > 0 {
        detail.push(format!(
            "{} output elements were never written (NaN)",
            exact.non_finite
        ));
    }
    if k.is_nan() || k > reference::KERNEL_BOUND {
        detail.push(format!(
            "rel_error {k:.3e} against the reference over the stored (dequantized) values exceeds \
             {:.0e}: a kernel bug",
            reference::KERNEL_BOUND
        ));
    }
    if e.is_nan() || e > bound {
        detail.push(format!(
            "rel_error {e:.3e} exceeds the dtype bound {bound:.0e}"
        ));
    }
    Verification {
        passed: detail.is_empty(),
        rel_error: e,
        cosine: exact.cosine(),
        bound,
        detail: detail.join("; "),
    }
}

fn to_rows(x: &[f32], hd: usize) -> Vec<Vec<f64>> {
    x.chunks(hd)
        .map(|r| r.iter().map(|v| *v as f64).collect())
        .collect()
}

fn non_finite(x: &[f32]) -> u64 {
    x.iter().filter(|v| !v.is_finite()).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Backend, OffloadConfig, Strategy, WorkloadKind, WorkloadSpec};
    use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};

    fn plan() -> CudaPlan {
        CudaPlan::new(&WorkloadSpec {
            kind: WorkloadKind::Attention,
            backend: Backend::Cuda,
            shape: ModelShape::uniform("t", 1, 4, 2, 64, 256, 1024),
            strategy: Strategy::Paged,
            k_dtype: CacheDtype::new(DtypeKind::Int8),
            v_dtype: CacheDtype::new(DtypeKind::Int8),
            batch: 2,
            prompt: 10,
            gen: 2,
            block_size: 4,
            shared_prefix: 0,
            window: None,
            mlp: false,
            seed: 1,
            offload: OffloadConfig::default(),
        })
        .unwrap()
    }

    /// Outputs computed on the host from the stored values: what a correct kernel produces.
    fn correct_outputs(p: &CudaPlan, seed: u64, len: u32) -> LayerOutputs {
        let (hd, qh, n_pre) = (
            p.head_dim as usize,
            p.q_heads as usize,
            p.prefill_queries as usize,
        );
        let mut decode = vec![0.0f32; p.batch as usize * qh * hd];
        let mut prefill = vec![0.0f32; p.batch as usize * n_pre * qh * hd];
        for b in 0..p.batch {
            for h in 0..p.q_heads {
                let kvh = h / p.group();
                let k = reference::cache_rows(
                    reference::stream_key(seed, 0, Tensor::K),
                    p.kernel.k_codec,
                    b,
                    kvh,
                    len,
                    p.head_dim,
                    0,
                )
                .1;
                let v = reference::cache_rows(
                    reference::stream_key(seed, 0, Tensor::V),
                    p.kernel.v_codec,
                    b,
                    kvh,
                    len,
                    p.head_dim,
                    0,
                )
                .1;
                let qkey = reference::stream_key(seed, 0, Tensor::Q);
                let at = ((b * p.q_heads + h) as usize) * hd;
                let q = reference::query(qkey, b, len - 1, h, p.head_dim);
                for (o, x) in
                    decode[at..at + hd]
                        .iter_mut()
                        .zip(reference::attend(&q, &k, &v, len as usize))
                {
                    *o = x as f32;
                }
                for i in 0..n_pre {
                    let pos = p.prompt - p.prefill_queries + i as u32;
                    let q = reference::query(qkey, b, pos, h, p.head_dim);
                    let at = ((b as usize * n_pre + i) * qh + h as usize) * hd;
                    for (o, x) in prefill[at..at + hd].iter_mut().zip(reference::attend(
                        &q,
                        &k,
                        &v,
                        pos as usize + 1,
                    )) {
                        *o = x as f32;
                    }
                }
            }
        }
        LayerOutputs {
            layer: 0,
            decode,
            prefill,
        }
    }

    #[test]
    fn correct_outputs_pass_within_the_bounds() {
        let p = plan();
        let v = verify_outputs(&p, 1, 12, &[correct_outputs(&p, 1, 12)]);
        assert!(v.passed, "{}", v.detail);
        // int8 costs accuracy against the exact inputs, but far less than its bound.
        assert!(
            v.rel_error > 1e-5 && v.rel_error < v.bound / 2.0,
            "{}",
            v.rel_error
        );
    }

    #[test]
    fn an_unwritten_element_fails() {
        let p = plan();
        let mut out = correct_outputs(&p, 1, 12);
        // Sequence 0 is sampled, but an unsampled position must fail too.
        out.prefill[64 * 5 + 3] = f32::NAN;
        let v = verify_outputs(&p, 1, 12, &[out]);
        assert!(
            !v.passed && v.detail.contains("never written"),
            "{}",
            v.detail
        );
    }

    #[test]
    fn a_wrong_head_mapping_fails_as_a_kernel_bug() {
        // Swap the outputs of query heads 0 and 2 (different KV heads) of sequence 0.
        let p = plan();
        let mut out = correct_outputs(&p, 1, 12);
        let (a, b) = (0..64, 128..192);
        let tmp: Vec<f32> = out.decode[a.clone()].to_vec();
        out.decode.copy_within(b.clone(), a.start);
        out.decode[b].copy_from_slice(&tmp);
        let v = verify_outputs(&p, 1, 12, &[out]);
        assert!(!v.passed && v.detail.contains("kernel bug"), "{}", v.detail);
    }
}
