//! The synthetic decoder: per layer RMSNorm → Q/K/V projections → RoPE → cache write →
//! attention → output projection → (RMSNorm → SiLU-gated MLP), with seeded random weights
//! and seeded random input embeddings (one per sequence and position, so decode does not
//! depend on sampling and the f64 reference can replay every token).

use crate::accuracy::decoder_bound;
use crate::attention::verdict;
use crate::cache::{self, CacheGeometry, KvCache};
use crate::cpu::decode::{decode_layer, Walk};
use crate::cpu::matmul::{matmul, Mat, Par};
use crate::cpu::prefill::{prefill_attention, prefill_flops, PrefillShape};
use crate::cpu::Isa;
use crate::reference;
use crate::synth;
use crate::workload::{Interrupt, MemoryUse, Verification, Workload};
use crate::{WorkloadError, WorkloadSpec};
use rayon::prelude::*;

const ROPE_BASE: f32 = 10_000.0;
const TAG_X: u64 = 0x58;
const TAG_W: u64 = 0x57;

/// One layer's weights, row-major `[in × out]`.
struct Layer {
    attn_norm: Vec<f32>,
    wq: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    wo: Vec<f32>,
    mlp_norm: Vec<f32>,
    w_gate: Vec<f32>,
    w_up: Vec<f32>,
    w_down: Vec<f32>,
}

fn weights(seed: u64, layer: usize, which: u64, rows: usize, cols: usize) -> Vec<f32> {
    // Uniform with the variance of N(0, 1/fan_in): keeps activations O(1) through the stack.
    let a = (3.0 / rows as f32).sqrt();
    let mut w = vec![0.0f32; rows * cols];
    w.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
        synth::fill(
            synth::stream(seed, TAG_W, layer as u64, which, r as u64),
            a,
            row,
        );
    });
    w
}

fn norm_weights(seed: u64, layer: usize, which: u64, n: usize) -> Vec<f32> {
    let mut w = vec![0.0f32; n];
    synth::fill(
        synth::stream(seed, TAG_W, layer as u64, which, u64::MAX),
        0.2,
        &mut w,
    );
    w.iter_mut().for_each(|x| *x += 1.0);
    w
}

/// The decoder workload.
pub struct DecoderWorkload {
    spec: WorkloadSpec,
    isa: Isa,
    layers: Vec<Layer>,
    final_norm: Vec<f32>,
    windows: Vec<Option<usize>>,
    cache: Option<Box<dyn KvCache>>,
    pos: usize,
    /// Attention output of the last layer at the last position, `batch × q_heads × d`.
    last_attn: Vec<f32>,
    /// Final normed hidden state at the last position, `batch × hidden`.
    last_hidden: Vec<f32>,
    last_pos: Option<usize>,
    bytes_read: u64,
    /// The user's request to stop, checked between layers and between the steps of a
    /// verification.
    interrupt: Interrupt,
}

struct Dims {
    hq: usize,
    hk: usize,
    d: usize,
    hidden: usize,
    inter: usize,
}

impl DecoderWorkload {
    /// Build: generate the weights and an empty cache.
    pub fn new(spec: &WorkloadSpec) -> Result<Self, WorkloadError> {
        let s = &spec.shape;
        let (hq, hk, d, hidden, inter) = (
            s.q_heads as usize,
            s.kv_heads as usize,
            s.head_dim as usize,
            s.hidden as usize,
            s.intermediate as usize,
        );
        spec.validate()?;
        let g = CacheGeometry::new(s, spec.window, spec.k_dtype, spec.v_dtype, 1, 1, 1, 0)
            .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
        let cache = cache::for_spec(spec).map_err(|e| WorkloadError::Invalid(e.to_string()))?;
        let seed = spec.seed;
        let layers = (0..s.layers as usize)
            .map(|l| Layer {
                attn_norm: norm_weights(seed, l, 0, hidden),
                wq: weights(seed, l, 1, hidden, hq * d),
                wk: weights(seed, l, 2, hidden, hk * d),
                wv: weights(seed, l, 3, hidden, hk * d),
                wo: weights(seed, l, 4, hq * d, hidden),
                mlp_norm: norm_weights(seed, l, 5, hidden),
                w_gate: if spec.mlp {
                    weights(seed, l, 6, hidden, inter)
                } else {
                    Vec::new()
                },
                w_up: if spec.mlp {
                    weights(seed, l, 7, hidden, inter)
                } else {
                    Vec::new()
                },
                w_down: if spec.mlp {
                    weights(seed, l, 8, inter, hidden)
                } else {
                    Vec::new()
                },
            })
            .collect();
        Ok(DecoderWorkload {
            spec: spec.clone(),
            isa: Isa::detect(),
            layers,
            final_norm: norm_weights(seed, usize::MAX, 9, hidden),
            windows: g.windows,
            cache,
            pos: 0,
            last_attn: Vec::new(),
            last_hidden: Vec::new(),
            last_pos: None,
            bytes_read: 0,
            interrupt: Interrupt::default(),
        })
    }

    fn dims(&self) -> Dims {
        let s = &self.spec.shape;
        Dims {
            hq: s.q_heads as usize,
            hk: s.kv_heads as usize,
            d: s.head_dim as usize,
            hidden: s.hidden as usize,
            inter: s.intermediate as usize,
        }
    }

    /// Input embedding of (seq, pos); the shared prefix is sequence 0's.
    fn embedding(&self, seq: usize, pos: usize, out: &mut [f32]) {
        let src = if pos < self.spec.shared_prefix as usize {
            0
        } else {
            seq as u64
        };
        synth::fill(
            synth::stream(self.spec.seed, TAG_X, src, pos as u64, 0),
            1.0,
            out,
        );
    }

    /// Run tokens through every layer. `rows[i] = (seq, pos)`; `x` is `rows × hidden`.
    /// With `attend_all`, the rows are whole sequences from position 0 (prefill, or the
    /// `none` strategy's recompute) and attend to each other causally; otherwise each row
    /// is one new token attending to the cache.
    fn forward(
        &mut self,
        rows: &[(usize, usize)],
        x: &mut [f32],
        attend_all: bool,
        write_cache: bool,
    ) -> Result<u64, WorkloadError> {
        let Dims {
            hq,
            hk,
            d,
            hidden,
            inter,
        } = self.dims();
        let n = rows.len();
        let mut bytes = 0u64;
        let mut a = vec![0.0f32; n * hidden];
        let mut q = vec![0.0f32; n * hq * d];
        let mut k = vec![0.0f32; n * hk * d];
        let mut v = vec![0.0f32; n * hk * d];
        let mut att = vec![0.0f32; n * hq * d];
        for l in 0..self.layers.len() {
            self.interrupt.check()?;
            let w = &self.layers[l];
            rms_norm_rows(x, &w.attn_norm, &mut a);
            project(n, &a, hidden, &w.wq, hq * d, &mut q);
            project(n, &a, hidden, &w.wk, hk * d, &mut k);
            project(n, &a, hidden, &w.wv, hk * d, &mut v);
            for (i, &(_, pos)) in rows.iter().enumerate() {
                q[i * hq * d..(i + 1) * hq * d]
                    .chunks_mut(d)
                    .for_each(|h| rope(h, pos));
                k[i * hk * d..(i + 1) * hk * d]
                    .chunks_mut(d)
                    .for_each(|h| rope(h, pos));
            }
            if write_cache {
                let cache = self.cache.as_mut().expect("writing needs a cache");
                for (i, &(seq, _)) in rows.iter().enumerate() {
                    cache
                        .append(
                            l,
                            seq,
                            &k[i * hk * d..(i + 1) * hk * d],
                            &v[i * hk * d..(i + 1) * hk * d],
                        )
                        .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
                }
            }
            if attend_all {
                // Rows come as whole sequences: attend within each run of one sequence.
                let shape = PrefillShape {
                    q_heads: hq,
                    kv_heads: hk,
                    head_dim: d,
                    window: self.windows[l],
                };
                let mut start = 0;
                while start < n {
                    let seq = rows[start].0;
                    let t = rows[start..].iter().take_while(|r| r.0 == seq).count();
                    prefill_attention(
                        &shape,
                        t,
                        &q[start * hq * d..(start + t) * hq * d],
                        &k[start * hk * d..(start + t) * hk * d],
                        &v[start * hk * d..(start + t) * hk * d],
                        &mut att[start * hq * d..(start + t) * hq * d],
                    );
                    bytes += (t * hk * d * 2 * 4) as u64;
                    start += t;
                }
            } else {
                let inv = 1.0 / (d as f32).sqrt();
                q.iter_mut().for_each(|x| *x *= inv);
                let cache = self.cache.as_deref_mut().expect("decode needs a cache");
                bytes += decode_layer(
                    cache,
                    l,
                    n,
                    hk,
                    hq / hk,
                    &q,
                    &mut att,
                    Walk::CALIBRATED,
                    self.isa,
                )
                .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
            }
            if l + 1 == self.layers.len() {
                self.last_attn = last_rows(rows, &att, hq * d);
            }
            let w = &self.layers[l];
            matmul(
                n,
                hidden,
                hq * d,
                Mat::rows(&att, hq * d),
                Mat::rows(&w.wo, hidden),
                x,
                true,
                Par::Pool,
            );
            if self.spec.mlp {
                rms_norm_rows(x, &w.mlp_norm, &mut a);
                let mut gate = vec![0.0f32; n * inter];
                let mut up = vec![0.0f32; n * inter];
                project(n, &a, hidden, &w.w_gate, inter, &mut gate);
                project(n, &a, hidden, &w.w_up, inter, &mut up);
                gate.par_iter_mut()
                    .zip(&up)
                    .for_each(|(g, u)| *g = *g / (1.0 + (-*g).exp()) * u);
                matmul(
                    n,
                    hidden,
                    inter,
                    Mat::rows(&gate, inter),
                    Mat::rows(&w.w_down, hidden),
                    x,
                    true,
                    Par::Pool,
                );
            }
        }
        let mut h = vec![0.0f32; n * hidden];
        rms_norm_rows(x, &self.final_norm, &mut h);
        self.last_hidden = last_rows(rows, &h, hidden);
        Ok(bytes)
    }

    /// Every sequence's tokens `0..t` as rows, with their embeddings.
    fn sequence_rows(&self, t: usize) -> (Vec<(usize, usize)>, Vec<f32>) {
        let b = self.spec.batch as usize;
        let hidden = self.dims().hidden;
        let rows: Vec<(usize, usize)> = (0..b).flat_map(|s| (0..t).map(move |p| (s, p))).collect();
        let mut x = vec![0.0f32; rows.len() * hidden];
        x.par_chunks_mut(hidden)
            .zip(&rows)
            .for_each(|(o, &(s, p))| self.embedding(s, p, o));
        (rows, x)
    }

    fn step(&mut self) -> Result<(), WorkloadError> {
        let pos = self.pos;
        if pos >= self.spec.max_len() as usize {
            return Err(WorkloadError::Invalid(format!(
                "decode step {} past prompt + gen = {}; call reset() first",
                pos + 1,
                self.spec.max_len()
            )));
        }
        self.bytes_read = if self.cache.is_none() {
            // use_cache=False: the whole sequence again, keeping only the last token.
            let (rows, mut x) = self.sequence_rows(pos + 1);
            self.forward(&rows, &mut x, true, false)?
        } else {
            let b = self.spec.batch as usize;
            let hidden = self.dims().hidden;
            let rows: Vec<(usize, usize)> = (0..b).map(|s| (s, pos)).collect();
            let mut x = vec![0.0f32; b * hidden];
            x.chunks_mut(hidden)
                .zip(&rows)
                .for_each(|(o, &(s, p))| self.embedding(s, p, o));
            self.forward(&rows, &mut x, false, true)?
        };
        self.last_pos = Some(pos);
        self.pos += 1;
        Ok(())
    }

    /// The f64 reference for one sequence up to `pos`: (last layer's attention output,
    /// final hidden state) at `pos`.
    fn reference(&self, seq: usize, pos: usize) -> Result<(Vec<f64>, Vec<f64>), WorkloadError> {
        let Dims {
            hq,
            hk,
            d,
            hidden,
            inter,
        } = self.dims();
        let t = pos + 1;
        let f64s = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
        let mut xs: Vec<Vec<f64>> = (0..t)
            .map(|p| {
                let mut e = vec![0.0f32; hidden];
                self.embedding(seq, p, &mut e);
                f64s(&e)
            })
            .collect();
        let mut last_attn = Vec::new();
        for (l, w) in self.layers.iter().enumerate() {
            self.interrupt.check()?;
            let (an, mn) = (f64s(&w.attn_norm), f64s(&w.mlp_norm));
            let normed: Vec<f64> = xs
                .iter()
                .flat_map(|x| reference::rms_norm(x, &an))
                .collect();
            let heads = |m: Vec<f64>, width: usize, rot: bool| -> Vec<Vec<Vec<f64>>> {
                m.chunks(width * d)
                    .enumerate()
                    .map(|(p, row)| {
                        row.chunks(d)
                            .map(|h| {
                                let mut h = h.to_vec();
                                if rot {
                                    reference::rope(&mut h, p, ROPE_BASE as f64);
                                }
                                h
                            })
                            .collect()
                    })
                    .collect()
            };
            let qs = heads(reference::mat_mul(&normed, t, &w.wq, hq * d), hq, true);
            let ks = heads(reference::mat_mul(&normed, t, &w.wk, hk * d), hk, true);
            let vs = heads(reference::mat_mul(&normed, t, &w.wv, hk * d), hk, false);
            let window = self.windows[l];
            let atts: Vec<Vec<f64>> = (0..t)
                .into_par_iter()
                .map(|p| {
                    self.interrupt.check()?;
                    let lo = window.map_or(0, |w| (p + 1).saturating_sub(w));
                    Ok((0..hq)
                        .flat_map(|h| {
                            let kh = h / (hq / hk);
                            let keys: Vec<Vec<f64>> = (lo..=p).map(|j| ks[j][kh].clone()).collect();
                            let vals: Vec<Vec<f64>> = (lo..=p).map(|j| vs[j][kh].clone()).collect();
                            reference::attend(&qs[p][h], &keys, &vals)
                        })
                        .collect())
                })
                .collect::<Result<_, WorkloadError>>()?;
            let flat: Vec<f64> = atts.concat();
            let o = reference::mat_mul(&flat, t, &w.wo, hidden);
            for (x, o) in xs.iter_mut().zip(o.chunks(hidden)) {
                x.iter_mut().zip(o).for_each(|(a, b)| *a += b);
            }
            if self.spec.mlp {
                let m: Vec<f64> = xs
                    .iter()
                    .flat_map(|x| reference::rms_norm(x, &mn))
                    .collect();
                let g = reference::mat_mul(&m, t, &w.w_gate, inter);
                let u = reference::mat_mul(&m, t, &w.w_up, inter);
                let h: Vec<f64> = g
                    .iter()
                    .zip(&u)
                    .map(|(g, u)| reference::silu(*g) * u)
                    .collect();
                let down = reference::mat_mul(&h, t, &w.w_down, hidden);
                for (x, o) in xs.iter_mut().zip(down.chunks(hidden)) {
                    x.iter_mut().zip(o).for_each(|(a, b)| *a += b);
                }
            }
            if l + 1 == self.layers.len() {
                last_attn = atts[t - 1].clone();
            }
        }
        let hidden_out = reference::rms_norm(&xs[t - 1], &f64s(&self.final_norm));
        Ok((last_attn, hidden_out))
    }
}

/// The rows of `m` (width `w`) that are the last position of each sequence in `rows`.
fn last_rows(rows: &[(usize, usize)], m: &[f32], w: usize) -> Vec<f32> {
    let mut out = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if rows.get(i + 1).is_none_or(|n| n.0 != r.0) {
            out.extend_from_slice(&m[i * w..(i + 1) * w]);
        }
    }
    out
}

/// RMSNorm of each row of `x` (ε = 1e-5) times `w`, into `out`.
fn rms_norm_rows(x: &[f32], w: &[f32], out: &mut [f32]) {
    let n = w.len();
    out.par_chunks_mut(n)
        .zip(x.par_chunks(n))
        .for_each(|(o, r)| {
            let ms = r.iter().map(|v| v * v).sum::<f32>() / n as f32;
            let inv = 1.0 / (ms + 1e-5).sqrt();
            for ((o, v), g) in o.iter_mut().zip(r).zip(w) {
                *o = v * inv * g;
            }
        });
}

/// Rotate-half RoPE of one head vector at `pos`.
fn rope(x: &mut [f32], pos: usize) {
    let d = x.len();
    let half = d / 2;
    for i in 0..half {
        // Angles in f64: at long positions f32 would lose the phase.
        let theta = pos as f64 * (ROPE_BASE as f64).powf(-2.0 * i as f64 / d as f64);
        let (s, c) = theta.sin_cos();
        let (s, c) = (s as f32, c as f32);
        let (a, b) = (x[i], x[i + half]);
        x[i] = a * c - b * s;
        x[i + half] = a * s + b * c;
    }
}

impl Workload for DecoderWorkload {
    fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    fn watch(&mut self, interrupt: Interrupt) {
        self.interrupt = interrupt;
    }

    fn verify(&mut self) -> Result<Verification, WorkloadError> {
        self.reset()?;
        self.prefill()?;
        for _ in 0..self.spec.gen {
            self.interrupt.check()?;
            self.step()?;
        }
        let pos = self.last_pos.expect("prefill ran");
        let Dims { hq, d, hidden, .. } = self.dims();
        let (mut ga, mut wa, mut gh, mut wh) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for seq in 0..self.spec.batch as usize {
            let (att, hid) = self.reference(seq, pos)?;
            ga.extend(
                self.last_attn[seq * hq * d..(seq + 1) * hq * d]
                    .iter()
                    .map(|&x| x as f64),
            );
            wa.extend(att);
            gh.extend(
                self.last_hidden[seq * hidden..(seq + 1) * hidden]
                    .iter()
                    .map(|&x| x as f64),
            );
            wh.extend(hid);
        }
        self.reset()?;
        let bound = decoder_bound(
            &self.spec.k_dtype,
            &self.spec.v_dtype,
            self.spec.shape.layers,
        );
        Ok(verdict(
            reference::rel_error(&ga, &wa),
            reference::cosine(&gh, &wh),
            bound,
        ))
    }

    fn reset(&mut self) -> Result<(), WorkloadError> {
        if let Some(c) = self.cache.as_mut() {
            c.reset();
        }
        self.pos = 0;
        self.last_pos = None;
        self.bytes_read = 0;
        Ok(())
    }

    fn prefill(&mut self) -> Result<(), WorkloadError> {
        if self.pos != 0 {
            return Err(WorkloadError::Invalid(
                "prefill after decoding; call reset() first".into(),
            ));
        }
        let t = self.spec.prompt as usize;
        let (rows, mut x) = self.sequence_rows(t);
        let write = self.cache.is_some();
        self.forward(&rows, &mut x, true, write)?;
        self.last_pos = Some(t - 1);
        self.pos = t;
        Ok(())
    }

    fn decode_step(&mut self) -> Result<(), WorkloadError> {
        self.step()
    }

    fn memory(&self) -> MemoryUse {
        self.cache
            .as_ref()
            .map_or(MemoryUse::default(), |c| c.memory())
    }

    fn kv_bytes_read_last_step(&self) -> u64 {
        self.bytes_read
    }

    fn prefill_flops(&self) -> f64 {
        let Dims {
            hq,
            hk,
            d,
            hidden,
            inter,
        } = self.dims();
        let t = self.spec.prompt as f64;
        let b = self.spec.batch as f64;
        let mlp = if self.spec.mlp {
            3.0 * (hidden * inter) as f64
        } else {
            0.0
        };
        let proj = (hidden * (hq + 2 * hk) * d + hq * d * hidden) as f64 + mlp;
        let attn: f64 = self
            .windows
            .iter()
            .map(|&w| {
                prefill_flops(
                    &PrefillShape {
                        q_heads: hq,
                        kv_heads: hk,
                        head_dim: d,
                        window: w,
                    },
                    t as usize,
                )
            })
            .sum();
        b * (2.0 * t * proj * self.layers.len() as f64 + attn)
    }
}

/// `out = a × w`: `n` rows of width `k` through a `k × cols` row-major weight (a projection).
fn project(n: usize, a: &[f32], k: usize, w: &[f32], cols: usize, out: &mut [f32]) {
    matmul(
        n,
        cols,
        k,
        Mat::rows(a, k),
        Mat::rows(w, cols),
        out,
        false,
        Par::Pool,
    );
}
