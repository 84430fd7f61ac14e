//! One head's K (or V) rows in one sequence: a growing buffer (concat) or a preallocated
//! ring (contiguous), plus the f16 residual ring of KIVI dtypes.

use super::{residual_codec, CacheError, Segment};
use crate::codec::Codec;
use half::f16;

/// How the main store gets its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Growth {
    /// Reallocate and copy on every append (a naive `torch.cat` cache), keeping at most
    /// this many units (older ones are dropped by the same copy, as `k[:, -w:]` does).
    Concat(usize),
    /// Preallocated ring of this many units; the oldest is overwritten when full.
    Ring(usize),
}

/// Stored rows of one head.
#[derive(Debug, Clone)]
pub struct RowStore {
    codec: Codec,
    growth: Growth,
    main: Vec<u8>,
    /// First live unit of the ring.
    start: usize,
    /// Live units in `main`.
    units: usize,
    residual_cap: usize,
    residual: Vec<u8>,
    res_start: usize,
    res_rows: usize,
    res_codec: Codec,
}

impl RowStore {
    /// An empty store; `Ring(n)` preallocates `n` units, and the residual (if any) in full.
    pub fn new(codec: Codec, growth: Growth, residual_cap: usize) -> Self {
        let main = match growth {
            Growth::Ring(n) => vec![0u8; n * codec.unit_bytes],
            Growth::Concat(_) => Vec::new(),
        };
        let res_codec = residual_codec(codec.head_dim);
        let residual = match growth {
            Growth::Ring(_) => vec![0u8; residual_cap * res_codec.unit_bytes],
            Growth::Concat(_) => Vec::new(),
        };
        RowStore {
            codec,
            growth,
            main,
            start: 0,
            units: 0,
            residual_cap,
            residual,
            res_start: 0,
            res_rows: 0,
            res_codec,
        }
    }

    /// Bytes held (the allocation, not the live rows).
    pub fn allocated(&self) -> usize {
        self.main.len() + self.residual.len()
    }

    /// Bytes of the live rows.
    pub fn used(&self) -> usize {
        self.units * self.codec.unit_bytes + self.res_rows * self.res_codec.unit_bytes
    }

    /// Drop every row, keeping preallocated room.
    pub fn clear(&mut self) {
        if matches!(self.growth, Growth::Concat(_)) {
            self.main = Vec::new();
            self.residual = Vec::new();
        }
        self.start = 0;
        self.units = 0;
        self.res_start = 0;
        self.res_rows = 0;
    }

    /// Append one token's row (`head_dim` values).
    pub fn push(&mut self, row: &[f32]) -> Result<(), CacheError> {
        if self.residual_cap == 0 {
            return self.push_unit(row);
        }
        let hd = self.codec.head_dim;
        if self.res_rows == self.residual_cap {
            // Flush the oldest unit's worth of residual rows into the quantized store.
            let n = self.codec.unit_tokens;
            let mut rows = vec![0.0f32; n * hd];
            for (t, out) in rows.chunks_exact_mut(hd).enumerate() {
                let slot = (self.res_start + t) % self.residual_cap;
                let unit = &self.residual[slot * 2 * hd..(slot + 1) * 2 * hd];
                self.res_codec.decode_row(unit, 0, out);
            }
            self.push_unit(&rows)?;
            self.res_start = (self.res_start + n) % self.residual_cap;
            self.res_rows -= n;
        }
        let slot = (self.res_start + self.res_rows) % self.residual_cap;
        if matches!(self.growth, Growth::Concat(_)) && self.residual.len() < (slot + 1) * 2 * hd {
            let mut grown = Vec::with_capacity((slot + 1) * 2 * hd);
            grown.extend_from_slice(&self.residual);
            grown.resize((slot + 1) * 2 * hd, 0);
            self.residual = grown;
        }
        for (o, x) in self.residual[slot * 2 * hd..(slot + 1) * 2 * hd]
            .chunks_exact_mut(2)
            .zip(row)
        {
            o.copy_from_slice(&f16::from_f32(*x).to_le_bytes());
        }
        self.res_rows += 1;
        Ok(())
    }

    fn push_unit(&mut self, rows: &[f32]) -> Result<(), CacheError> {
        let ub = self.codec.unit_bytes;
        let slot = match self.growth {
            Growth::Concat(limit) => {
                // Exactly as `torch.cat`: a new buffer one unit larger, and a full copy.
                let keep_from = if self.units == limit { ub } else { 0 };
                let len = self.main.len() - keep_from + ub;
                let mut grown = Vec::with_capacity(len);
                grown.extend_from_slice(&self.main[keep_from..]);
                grown.resize(len, 0);
                self.main = grown;
                self.units = len / ub;
                self.units - 1
            }
            Growth::Ring(n) => {
                if n == 0 {
                    return Err(CacheError::Unsupported(
                        "a ring of 0 units cannot hold a token".into(),
                    ));
                }
                let slot = (self.start + self.units) % n;
                if self.units == n {
                    self.start = (self.start + 1) % n;
                } else {
                    self.units += 1;
                }
                slot
            }
        };
        self.codec
            .encode_unit(rows, &mut self.main[slot * ub..(slot + 1) * ub]);
        Ok(())
    }

    /// Live rows, oldest first; `keep` limits them to the most recent `keep` rows.
    pub fn segments(&self, keep: usize) -> Vec<Segment<'_>> {
        let mut segs = Vec::with_capacity(4);
        let ut = self.codec.unit_tokens;
        let ub = self.codec.unit_bytes;
        let main_rows = self.units * ut;
        let total = main_rows + self.res_rows;
        let mut skip = total.saturating_sub(keep);
        let n = match self.growth {
            Growth::Ring(n) => n,
            Growth::Concat(_) => self.units.max(1),
        };
        // The main store as at most two runs of units (a wrapped ring).
        let first_run = self.units.min(n - self.start);
        for (u0, units) in [(self.start, first_run), (0, self.units - first_run)] {
            let rows = units * ut;
            if units == 0 || skip >= rows {
                skip -= rows.min(skip);
                continue;
            }
            segs.push(Segment {
                codec: &self.codec,
                bytes: &self.main[u0 * ub..(u0 + units) * ub],
                row0: skip,
                rows: rows - skip,
            });
            skip = 0;
        }
        let rb = self.res_codec.unit_bytes;
        let first_run = self
            .res_rows
            .min(self.residual_cap - self.res_start.min(self.residual_cap));
        for (s0, rows) in [(self.res_start, first_run), (0, self.res_rows - first_run)] {
            if rows == 0 || skip >= rows {
                skip -= rows.min(skip);
                continue;
            }
            segs.push(Segment {
                codec: &self.res_codec,
                bytes: &self.residual[s0 * rb..(s0 + rows) * rb],
                row0: skip,
                rows: rows - skip,
            });
            skip = 0;
        }
        segs
    }
}
