//! Decode attention: the query heads of one KV group against every stored row of that head,
//! in tiles with an online softmax, split across threads flash-decoding style (each part
//! keeps its own max, sum and output; parts merge exactly).

use super::Isa;
use crate::cache::{CacheError, HeadView, KvCache, Segment};
use crate::codec::Codec;
use kvbench_planner::{CacheDtype, DtypeKind};
use rayon::prelude::*;

/// Rows per tile: the score block (heads × TILE) stays in L1.
pub const TILE: usize = 64;

/// Online-softmax state of one part of the rows.
#[derive(Debug, Clone)]
pub struct Partial {
    /// Running max of each head's scores.
    pub max: Vec<f32>,
    /// Σ exp(score − max) of each head.
    pub sum: Vec<f32>,
    /// Σ exp(score − max) · v of each head (`heads × head_dim`).
    pub acc: Vec<f32>,
}

impl Partial {
    fn new(heads: usize, d: usize) -> Self {
        Partial {
            max: vec![f32::NEG_INFINITY; heads],
            sum: vec![0.0; heads],
            acc: vec![0.0; heads * d],
        }
    }

    /// Fold `other` into `self` exactly: rescale both to the larger max.
    pub fn merge(&mut self, other: &Partial) {
        let d = self.acc.len() / self.max.len();
        for h in 0..self.max.len() {
            let m = self.max[h].max(other.max[h]);
            if m == f32::NEG_INFINITY {
                continue;
            }
            let (a, b) = ((self.max[h] - m).exp(), (other.max[h] - m).exp());
            self.sum[h] = self.sum[h] * a + other.sum[h] * b;
            for (x, y) in self.acc[h * d..(h + 1) * d]
                .iter_mut()
                .zip(&other.acc[h * d..(h + 1) * d])
            {
                *x = *x * a + y * b;
            }
            self.max[h] = m;
        }
    }

    /// The attention output (`heads × head_dim`).
    pub fn finish(&self, out: &mut [f32]) {
        let d = self.acc.len() / self.max.len();
        for h in 0..self.max.len() {
            let inv = if self.sum[h] > 0.0 {
                1.0 / self.sum[h]
            } else {
                0.0
            };
            for (o, a) in out[h * d..(h + 1) * d]
                .iter_mut()
                .zip(&self.acc[h * d..(h + 1) * d])
            {
                *o = a * inv;
            }
        }
    }
}

/// Rows a tile will read, asked for ahead of time a few cache lines at a time. One burst of
/// prefetches for a whole tile (66 lines for a 16-row int8 block of K and V) stalls the core
/// until most of its lines arrive (more misses than it can track at once); spread over the
/// tile's work, the same lines overlap it. Measured on a Zen 5 (docs/performance.md, seventh
/// round), a paged int8 MHA step at 32K (two layers): one burst 31.6 ms, two 23.6–25.2 ms,
/// [`Ahead::BURSTS`] 20.9–22.7 ms; a contiguous int4 step with one burst per tile took 2×
/// the step without prefetch, with four bursts the same.
#[derive(Default)]
pub(super) struct Ahead<'a> {
    /// Byte runs still to ask for, in order.
    runs: Vec<&'a [u8]>,
    /// The next line to ask for: (run, byte offset in it).
    at: (usize, usize),
    /// Lines per burst.
    burst: usize,
}

impl<'a> Ahead<'a> {
    /// Bursts a tile's prefetches are spread over (one before each of its four steps).
    pub(super) const BURSTS: usize = 4;

    /// Ask for the K and V rows `rows` (from [`HeadAttention::next_rows`]) over the next
    /// [`Self::BURSTS`] calls of [`Self::issue`], forgetting what is left of earlier asks.
    pub(super) fn ask(&mut self, rows: [Rows<'a>; 2]) {
        self.runs.clear();
        self.at = (0, 0);
        for (segs, i, r, n) in rows {
            push_runs(segs, i, r, n, &mut self.runs);
        }
        let lines: usize = self.runs.iter().map(|r| r.len().div_ceil(64)).sum();
        self.burst = lines.div_ceil(Self::BURSTS);
    }

    /// Ask for nothing more.
    fn clear(&mut self) {
        self.runs.clear();
        self.burst = 0;
    }

    /// Ask for the next burst of lines.
    #[inline]
    fn issue(&mut self) {
        self.burst_with(prefetch_line);
    }

    /// Hand the next burst's line addresses to `each_line`. Its pace is part of what was
    /// measured: a tighter loop (a run's lines at once, the position in registers) cost
    /// less in cache but, issuing a 64-row tile's 128 lines back to back, made contiguous
    /// steps from memory 1.5-2× slower on a Zen 5 (docs/performance.md, eighteenth round).
    #[inline]
    pub(super) fn burst_with(&mut self, mut each_line: impl FnMut(*const u8)) {
        let mut left = self.burst;
        while left > 0 {
            let Some(run) = self.runs.get(self.at.0) else {
                return;
            };
            match run.get(self.at.1..) {
                Some(rest) if !rest.is_empty() => each_line(rest.as_ptr()),
                _ => {
                    self.at = (self.at.0 + 1, 0);
                    continue;
                }
            }
            self.at.1 += 64;
            left -= 1;
        }
    }
}

/// Rows to read: (segments, segment index, row in it, rows), crossing into the following
/// segments.
pub(super) type Rows<'a> = (&'a [Segment<'a>], usize, usize, usize);

/// What a tile asks for ahead while it works ([`HeadAttention::tile`]).
#[derive(Clone, Copy)]
enum Ask<'a> {
    Nothing,
    /// The same head's next tile.
    Own,
    /// These K and V rows (another head's next tile).
    These([Rows<'a>; 2]),
}

/// The bytes of `n` rows from row `r` of segment `i` on, one run per segment, appended to
/// `out` (paged blocks are shorter than a tile).
fn push_runs<'a>(
    segs: &'a [Segment<'a>],
    mut i: usize,
    mut r: usize,
    mut n: usize,
    out: &mut Vec<&'a [u8]>,
) {
    while n > 0 {
        let Some(seg) = segs.get(i) else { return };
        let c = seg.codec;
        let row_bytes = c.unit_bytes / c.unit_tokens;
        let take = n.min((seg.row0 + seg.rows).saturating_sub(r));
        let lo = (r * row_bytes).min(seg.bytes.len());
        let hi = ((r + take) * row_bytes).min(seg.bytes.len());
        if hi > lo {
            out.push(&seg.bytes[lo..hi]);
        }
        if take == 0 && r < seg.row0 + seg.rows {
            return;
        }
        n -= take;
        i += 1;
        r = segs.get(i).map_or(0, |s| s.row0);
    }
}

/// Where row `r` of a segment list lies: (segment index, row inside it).
fn locate(segs: &[Segment], mut r: usize) -> (usize, usize) {
    for (i, s) in segs.iter().enumerate() {
        if r < s.rows {
            return (i, s.row0 + r);
        }
        r -= s.rows;
    }
    (segs.len(), 0)
}

/// The rows of `segs` as tile pieces (segment, first row, rows): `rows` rows from `*at` on,
/// crossing into the following segments (paged blocks are shorter than a tile); advances
/// `*at`.
fn tile_pieces<'a>(
    segs: &'a [Segment<'a>],
    at: &mut (usize, usize),
    rows: usize,
    out: &mut Vec<(&'a Segment<'a>, usize, usize)>,
) {
    out.clear();
    let mut left = rows;
    while left > 0 {
        let s = &segs[at.0];
        let n = left.min(s.row0 + s.rows - at.1);
        out.push((s, at.1, n));
        left -= n;
        at.1 += n;
        if at.1 == s.row0 + s.rows {
            at.0 += 1;
            at.1 = segs.get(at.0).map_or(0, |s| s.row0);
        }
    }
}

/// `rows` (decoded f32 rows of format `codec`) as a segment the kernels read.
fn f32_segment<'a>(codec: &'a Codec, rows: &'a [f32]) -> Segment<'a> {
    Segment {
        codec,
        bytes: bytemuck::cast_slice(rows),
        row0: 0,
        rows: rows.len() / codec.head_dim,
    }
}

/// Ask for the cache line at `p` into every level (a hint: nothing where the target has
/// no prefetch instruction).
#[inline]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing and cannot fault, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Ask for the descriptor of segment `i` (the `Segment` itself, not its rows), if there is one.
#[inline]
fn prefetch_segment(segs: &[Segment], i: usize) {
    if let Some(s) = segs.get(i) {
        prefetch_line(s as *const Segment as *const u8);
    }
}

/// Per-tile buffers, reused from tile to tile and from head to head of one part.
#[derive(Default)]
struct Scratch<'a> {
    /// Scores (`heads × TILE`, or `TILE × hp` on the wide path).
    s: Vec<f32>,
    /// A tile of K and of V decoded to f32 (wide path).
    kt: Vec<f32>,
    vt: Vec<f32>,
    /// Each head's softmax correction of the tile.
    corr: Vec<f32>,
    kp: Vec<(&'a Segment<'a>, usize, usize)>,
    vp: Vec<(&'a Segment<'a>, usize, usize)>,
    /// The rows asked for ahead of the next tile.
    ahead: Ahead<'a>,
}

/// The wide path's state: queries transposed (`d × hp`, heads padded to a multiple of
/// [`Isa::wide_lanes`]) and the softmax state per padded head.
struct Wide {
    hp: usize,
    qt: Vec<f32>,
    max: Vec<f32>,
    sum: Vec<f32>,
    corr: Vec<f32>,
}

/// Attention of one KV head's query heads to rows `begin..end` of its view, a tile at a
/// time, so that a driver can finish one head before the next or interleave heads tile by
/// tile.
struct HeadAttention<'a> {
    view: &'a HeadView<'a>,
    q: &'a [f32],
    heads: usize,
    d: usize,
    /// `Some` when the tile is dequantized once and scored as a small GEMM over the heads
    /// (large GQA groups, MQA).
    wide: Option<Wide>,
    /// `q` prepared once for the score kernels of the K format: split for integer dot
    /// products with int8/int4 keys where the CPU has them, else in code order for the AVX2
    /// code kernels.
    prepared: Option<super::Prepared>,
    /// An f32 row format, when K or V code rows are decoded a tile at a time and read by
    /// the float kernels ([`Isa::decodes_codes_first`]); which of the two, in `decode_kv`.
    f32_rows: Option<Codec>,
    decode_kv: (bool, bool),
    part: Partial,
    k: (usize, usize),
    v: (usize, usize),
    next: usize,
    end: usize,
    /// Rows per tile (at most `TILE`).
    tile: usize,
    isa: Isa,
}

impl<'a> HeadAttention<'a> {
    /// Rows `begin..end` of `view`; `at` is where row `begin` lies in its K and V segments
    /// ([`locate`]).
    fn new(
        view: &'a HeadView<'a>,
        q: &'a [f32],
        heads: usize,
        (begin, end): (usize, usize),
        at: ((usize, usize), (usize, usize)),
        tile: usize,
        isa: Isa,
    ) -> Self {
        let d = q.len() / heads;
        let wide = match (view.k.first(), view.v.first()) {
            (Some(k), Some(v))
                if isa.wide(heads, k.codec, v.codec)
                    && view.k.iter().all(|s| s.codec == k.codec)
                    && view.v.iter().all(|s| s.codec == v.codec) =>
            {
                let hp = heads.next_multiple_of(isa.wide_lanes());
                let mut qt = vec![0.0f32; d * hp];
                for h in 0..heads {
                    for c in 0..d {
                        qt[c * hp + h] = q[h * d + c];
                    }
                }
                Some(Wide {
                    hp,
                    qt,
                    max: vec![f32::NEG_INFINITY; hp],
                    sum: vec![0.0; hp],
                    corr: vec![0.0; hp],
                })
            }
            _ => None,
        };
        let int_dot = match (&wide, view.k.first()) {
            (None, Some(k)) => isa.int_query(k.codec, q, heads, end - begin),
            _ => None,
        };
        let first = |segs: &[Segment]| {
            wide.is_none()
                && segs.first().is_some_and(|s| {
                    isa.decodes_codes_first(heads, s.codec)
                        && segs.iter().all(|x| x.codec.same(s.codec))
                })
        };
        let decode_kv = (int_dot.is_none() && first(&view.k), first(&view.v));
        let prepared = match (int_dot, &wide, view.k.first()) {
            (Some(int_dot), _, _) => Some(int_dot),
            (None, None, Some(k)) if !decode_kv.0 => isa.code_query(k.codec, q, heads),
            _ => None,
        };
        let f32_rows = (decode_kv.0 || decode_kv.1).then(|| {
            Codec::new(CacheDtype::new(DtypeKind::F32), d as u32).expect("f32 rows of any width")
        });
        HeadAttention {
            view,
            q,
            heads,
            d,
            wide,
            prepared,
            f32_rows,
            decode_kv,
            part: Partial::new(heads, d),
            k: at.0,
            v: at.1,
            next: begin,
            end,
            tile: tile.clamp(1, TILE),
            isa,
        }
    }

    fn done(&self) -> bool {
        self.next >= self.end
    }

    /// Rows of this head's next tile.
    fn next_len(&self) -> usize {
        (self.end - self.next).min(self.tile)
    }

    /// The K and V rows of this head's next tile.
    fn next_rows(&self) -> [Rows<'a>; 2] {
        let n = self.next_len();
        [
            (&self.view.k, self.k.0, self.k.1, n),
            (&self.view.v, self.v.0, self.v.1, n),
        ]
    }

    /// Attend the next tile of up to `self.tile` rows, asking in bursts, while it works, for
    /// the rows `ahead` names: another head's next tile, or with [`Ask::Own`] this head's
    /// tile after this one (so that their memory latency overlaps this tile's work).
    fn tile(&mut self, scratch: &mut Scratch<'a>, ahead: Ask<'a>) {
        let (isa, heads, d) = (self.isa, self.heads, self.d);
        let n = self.next_len();
        tile_pieces(&self.view.k, &mut self.k, n, &mut scratch.kp);
        tile_pieces(&self.view.v, &mut self.v, n, &mut scratch.vp);
        self.next += n;
        // The descriptor of the segment after the next: in the paged walk every head's
        // list is read one block a tile, far apart, so each would miss (the K and V
        // descriptor loads held 8 % of all perf samples of a paged int4 run at 32K, Zen 5).
        prefetch_segment(&self.view.k, self.k.0 + 1);
        prefetch_segment(&self.view.v, self.v.0 + 1);
        match ahead {
            Ask::Nothing => scratch.ahead.clear(),
            Ask::Own => scratch.ahead.ask(self.next_rows()),
            Ask::These(rows) => scratch.ahead.ask(rows),
        }
        // One burst of the rows ahead before each of the tile's four steps.
        if let Some(w) = &mut self.wide {
            scratch.kt.resize(TILE * d, 0.0);
            scratch.vt.resize(TILE * d, 0.0);
            scratch.s.resize(TILE * w.hp, 0.0);
            scratch.ahead.issue();
            isa.decode_tile(&scratch.kp, &mut scratch.kt);
            scratch.ahead.issue();
            isa.scores_wide(&scratch.kt, n, d, &w.qt, w.hp, &mut scratch.s);
            isa.softmax_wide(&mut scratch.s, n, w.hp, &mut w.max, &mut w.sum, &mut w.corr);
            scratch.ahead.issue();
            isa.decode_tile(&scratch.vp, &mut scratch.vt);
            scratch.ahead.issue();
            isa.accumulate_wide(
                &scratch.vt,
                n,
                d,
                &scratch.s,
                w.hp,
                heads,
                &w.corr,
                &mut self.part.acc,
            );
            return;
        }
        scratch.s.resize(heads * TILE, 0.0);
        scratch.ahead.issue();
        match &self.f32_rows {
            Some(c) if self.decode_kv.0 => {
                scratch.kt.resize(TILE * d, 0.0);
                isa.decode_tile(&scratch.kp, &mut scratch.kt);
                let seg = f32_segment(c, &scratch.kt[..n * d]);
                isa.scores(&seg, 0, n, self.q, heads, &mut scratch.s, TILE);
            }
            _ => isa.scores_pieces(
                &scratch.kp,
                self.q,
                self.prepared.as_ref(),
                heads,
                &mut scratch.s,
                TILE,
            ),
        }
        let part = &mut self.part;
        scratch.corr.resize(heads, 1.0);
        let corr = &mut scratch.corr;
        scratch.ahead.issue();
        isa.softmax_rows(&mut scratch.s, n, TILE, &mut part.max, &mut part.sum, corr);
        for (h, &c) in corr.iter().enumerate() {
            if c != 1.0 {
                part.acc[h * d..(h + 1) * d]
                    .iter_mut()
                    .for_each(|a| *a *= c);
            }
        }
        scratch.ahead.issue();
        match &self.f32_rows {
            Some(c) if self.decode_kv.1 => {
                scratch.vt.resize(TILE * d, 0.0);
                isa.decode_tile(&scratch.vp, &mut scratch.vt);
                let seg = f32_segment(c, &scratch.vt[..n * d]);
                isa.accumulate(&seg, 0, n, &scratch.s, heads, TILE, &mut part.acc);
            }
            _ => isa.accumulate_pieces(&scratch.vp, &scratch.s, heads, TILE, &mut part.acc),
        }
        scratch.ahead.issue();
    }

    fn finish(mut self) -> Partial {
        if let Some(w) = &self.wide {
            self.part.max.copy_from_slice(&w.max[..self.heads]);
            self.part.sum.copy_from_slice(&w.sum[..self.heads]);
        }
        self.part
    }
}

/// Attend `q` (`heads × d`, already scaled by 1/√d) to rows `begin..end` of `view`.
pub fn attend_rows(
    view: &HeadView,
    q: &[f32],
    heads: usize,
    begin: usize,
    end: usize,
    isa: Isa,
) -> Partial {
    attend_rows_in_tiles(view, q, heads, (begin, end), TILE, None, isa)
}

/// [`attend_rows`] in tiles of `tile` rows (at most `TILE`), asking for each next tile ahead
/// as `prefetch` says ([`Walk::prefetch`]).
pub(crate) fn attend_rows_in_tiles(
    view: &HeadView,
    q: &[f32],
    heads: usize,
    (begin, end): (usize, usize),
    tile: usize,
    prefetch: Option<bool>,
    isa: Isa,
) -> Partial {
    let at = (locate(&view.k, begin), locate(&view.v, begin));
    let mut head = HeadAttention::new(view, q, heads, (begin, end), at, tile, isa);
    let mut scratch = Scratch::default();
    let ask = match prefetches(prefetch, view.k.len()) {
        true => Ask::Own,
        false => Ask::Nothing,
    };
    while !head.done() {
        head.tile(&mut scratch, ask);
    }
    head.finish()
}

/// [`attend_rows`] for several KV heads whose rows lie side by side in shared blocks (a
/// paged block holds every head's rows of its tokens): block by block, each head's rows of
/// the block in turn, so that the blocks are read front to back as one stream instead of
/// one short run per head and block (which the hardware prefetchers cannot follow: it cost
/// a third of the bandwidth on a Zen 5). A tile is one block (16 to `TILE` rows), or
/// `walk.rows` rows across blocks ([`Together`]: fewer tiles, but as many short runs at once
/// as blocks in a tile). One [`Partial`] per view, each what [`attend_rows_in_tiles`] gives
/// that view alone with the same tile.
pub(crate) fn attend_heads_together(
    jobs: &[DecodeJob],
    heads: usize,
    (begin, end): (usize, usize),
    walk: Walk,
    isa: Isa,
) -> Vec<Partial> {
    // Views of shared blocks have the same segments: find row `begin` once.
    let first = &jobs[0].view;
    let at = (locate(&first.k, begin), locate(&first.v, begin));
    let rows = |s: &[Segment]| s.iter().map(|x| (x.row0, x.rows)).collect::<Vec<_>>();
    debug_assert!(jobs
        .iter()
        .all(|j| rows(&j.view.k) == rows(&first.k) && rows(&j.view.v) == rows(&first.v)));
    let tile = together_tile(first, walk.rows);
    let mut each: Vec<HeadAttention> = jobs
        .iter()
        .map(|j| HeadAttention::new(&j.view, j.q, heads, (begin, end), at, tile, isa))
        .collect();
    let mut scratch = Scratch::default();
    let prefetch = prefetches(walk.prefetch, first.k.len());
    while each.first().is_some_and(|h| !h.done()) {
        let heads_here = each.len();
        for i in 0..heads_here {
            // What is read next: the next head's rows of this tile, or after the last head,
            // the first head's next tile.
            let ask = match prefetch {
                true => Ask::These(each[(i + 1) % heads_here].next_rows()),
                false => Ask::Nothing,
            };
            each[i].tile(&mut scratch, ask);
        }
    }
    each.into_iter().map(HeadAttention::finish).collect()
}

/// Rows per tile when a job is read on its own: `rows`, or with 0 [`TILE`], within
/// 1..=`TILE`.
pub(crate) fn alone_tile(rows: usize) -> usize {
    match rows {
        0 => TILE,
        rows => rows.min(TILE),
    }
}

/// Rows per tile when heads are read together: `rows`, or with 0 the block size, within
/// 16..=`TILE`.
pub(crate) fn together_tile(view: &HeadView, rows: usize) -> usize {
    match rows {
        0 => view.k.iter().map(|s| s.rows).max().unwrap_or(TILE),
        rows => rows,
    }
    .clamp(16, TILE)
}

/// How [`decode_attention`] reads jobs whose views share blocks (a sequence's KV heads in a
/// paged cache): `jobs` consecutive jobs at once, block by block (`attend_heads_together`),
/// in tiles of `rows` rows (0: one block).
///
/// One block a tile keeps the walk one stream through memory, which a memory-bound step
/// needs; a compute-bound one pays a tile's fixed cost (about 50 ns on a Zen 5) every block
/// instead. On a Zen 5 at MHA 32K, 64-row tiles against one block: int4 and nf4 13-27 %
/// faster, fp8 9 %, f16 18-24 % slower, int8 either way as the memory got busier; at 8 × 64
/// heads f16 and int8 faster (docs/performance.md, eighth round). So the runner times both
/// on the workload itself ([`crate::attention::AttentionWorkload`]'s `tune`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Together {
    /// Consecutive jobs read together (1: each on its own).
    pub jobs: usize,
    /// How every job's rows are walked (its `rows` apply where jobs are read together).
    pub walk: Walk,
}

impl Together {
    /// Every job on its own, walked as the calibration set.
    pub const ALONE: Together = Together {
        jobs: 1,
        walk: Walk::CALIBRATED,
    };
}

/// How one workload's decode steps walk their rows: what the runner chose by timing the
/// workload itself ([`crate::attention::AttentionWorkload`]'s `tune`), or the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Walk {
    /// Rows per tile: where a sequence's heads are read together ([`Together`]) 0 means one
    /// block, elsewhere [`TILE`]. Which pays depends on the workload: on a Zen 3
    /// (docs/performance.md, fifteenth round) 16-row tiles took a contiguous GQA-8 f32 step at
    /// 32K from 35 to 22 ms (each tile's K and V, and the next tile asked for, fit in the
    /// L1d, which the value kernel's passes over a tile reread), while MHA f32 and MQA lost
    /// 10-25 % to them.
    pub rows: usize,
    /// Whether each tile asks for the next one's rows ahead of time; `None` leaves it to the
    /// machine's calibration for the layout ([`super::tile_prefetch`]). It depends on the
    /// workload as well as the machine: on a Zen 3 (docs/performance.md, fifteenth round) it
    /// cost a contiguous MHA step at 32K 7-17 % while it saved a GQA-8 step 6-9 %.
    pub prefetch: Option<bool>,
}

impl Walk {
    /// One block a tile, the prefetch as calibrated.
    pub const CALIBRATED: Walk = Walk {
        rows: 0,
        prefetch: None,
    };
}

/// Whether tiles over `segments` segments ask ahead: as `prefetch` says, else as calibrated.
fn prefetches(prefetch: Option<bool>, segments: usize) -> bool {
    prefetch.unwrap_or_else(|| super::tile_prefetch(segments))
}

/// One decode-attention job: a KV head's view and the query heads of its group.
pub struct DecodeJob<'a> {
    pub view: HeadView<'a>,
    /// `heads × d`, scaled by 1/√d.
    pub q: &'a [f32],
    /// `heads × d` output.
    pub out: &'a mut [f32],
}

/// Run every job on the current rayon pool, splitting long views into parts so that all
/// threads have work (flash-decoding), then merging each job's parts exactly.
///
/// `together.jobs` consecutive jobs whose views share blocks (a sequence's KV heads in a
/// paged cache, whose views have the same segments; 1 when each view is its own store) are
/// attended in one pass over their blocks ([`attend_heads_together`]); their parts are
/// aligned to whole tiles.
pub fn decode_attention(jobs: &mut [DecodeJob], heads: usize, together: Together, isa: Isa) {
    let threads = rayon::current_num_threads();
    let total: usize = jobs.iter().map(|j| j.view.rows()).sum();
    // Aim for ~4 parts per thread overall, none shorter than 256 rows.
    let target = (total / (4 * threads)).max(256);
    let Together {
        jobs: together,
        walk,
    } = together;
    let together = together.max(1);
    // (first job, jobs, first row, end row)
    let parts: Vec<(usize, usize, usize, usize)> = (0..jobs.len())
        .step_by(together)
        .flat_map(|first| {
            let group = &jobs[first..(first + together).min(jobs.len())];
            let rows = group[0].view.rows();
            let alike = |j: &DecodeJob| {
                j.view.rows() == rows
                    && j.view.k.len() == group[0].view.k.len()
                    && j.view.v.len() == group[0].view.v.len()
            };
            if group.len() > 1 && group.iter().all(alike) {
                let per = (target / group.len()).max(256).next_multiple_of(TILE);
                let n = rows.div_ceil(per).max(1);
                let g = group.len();
                (0..n)
                    .map(|p| (first, g, p * per, ((p + 1) * per).min(rows)))
                    .collect::<Vec<_>>()
            } else {
                group
                    .iter()
                    .enumerate()
                    .flat_map(|(o, j)| {
                        let rows = j.view.rows();
                        let n = rows.div_ceil(target).max(1);
                        (0..n).map(move |p| (first + o, 1, rows * p / n, rows * (p + 1) / n))
                    })
                    .collect()
            }
        })
        .collect();
    let partials: Vec<Vec<Partial>> = parts
        .par_iter()
        .map(|&(first, n, b, e)| match n {
            1 => vec![attend_rows_in_tiles(
                &jobs[first].view,
                jobs[first].q,
                heads,
                (b, e),
                alone_tile(walk.rows),
                walk.prefetch,
                isa,
            )],
            _ => attend_heads_together(&jobs[first..first + n], heads, (b, e), walk, isa),
        })
        .collect();
    // Fold each job's parts in row order.
    let mut merged: Vec<Option<Partial>> = (0..jobs.len()).map(|_| None).collect();
    for (&(first, _, _, _), ps) in parts.iter().zip(partials) {
        for (i, p) in ps.into_iter().enumerate() {
            match &mut merged[first + i] {
                Some(acc) => acc.merge(&p),
                slot => *slot = Some(p),
            }
        }
    }
    for (job, part) in jobs.iter_mut().zip(merged) {
        match part {
            Some(p) => p.finish(job.out),
            None => job.out.fill(0.0),
        }
    }
}

/// Decode attention of one layer for every sequence, over any cache layout: each
/// sequence's rows made resident ([`KvCache::prepare`]), then every (sequence, KV head)
/// attended in parallel. `q` and `out` are `batch × kv_heads × group × d` (q already scaled
/// by 1/√d). `walk`: how the rows are walked ([`Walk`]). Returns the KV bytes read.
#[allow(clippy::too_many_arguments)]
pub fn decode_layer(
    cache: &mut dyn KvCache,
    layer: usize,
    batch: usize,
    kv_heads: usize,
    group: usize,
    q: &[f32],
    out: &mut [f32],
    walk: Walk,
    isa: Isa,
) -> Result<u64, CacheError> {
    for seq in 0..batch {
        cache.prepare(layer, seq)?;
    }
    let cache = &*cache;
    let per_job = q.len() / (batch * kv_heads);
    // In parallel: a paged view lists every block of the sequence.
    let mut jobs: Vec<DecodeJob> = out
        .par_chunks_mut(per_job)
        .zip(q.par_chunks(per_job))
        .enumerate()
        .map(|(i, (o, qg))| DecodeJob {
            view: cache.view(layer, i / kv_heads, i % kv_heads),
            q: qg,
            out: o,
        })
        .collect();
    let bytes = jobs.iter().map(|j| j.view.bytes_read()).sum();
    // Heads that share blocks are read together when the step reads past the cache.
    let jobs_together = match reads_heads_together(cache) {
        true => kv_heads,
        false => 1,
    };
    let together = Together {
        jobs: jobs_together,
        walk,
    };
    decode_attention(&mut jobs, group, together, isa);
    Ok(bytes)
}

/// Whether [`decode_layer`] reads a sequence's KV heads of `cache` together, block by block:
/// their rows share blocks and a step reads past the last-level cache.
pub fn reads_heads_together(cache: &dyn KvCache) -> bool {
    cache.heads_share_blocks() && super::heads_together(cache.resident_bytes())
}
