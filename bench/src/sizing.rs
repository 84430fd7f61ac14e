//! Working sets sized from the machine: an attention row's decode step must read more than
//! [`LLC_FACTOR`] × the measured last-level cache, or it times the cache, not memory. Rows
//! are grown with more layers of distinct KV (as successive layers of a model are), never by
//! changing the shape of one layer; a row that cannot grow (the memory would not hold it) is
//! left as it is and the runner flags it `cache_resident`.

use crate::flags::LLC_FACTOR;
use crate::memory::{predicted_kv_bytes, MemoryNeed};
use kvbench_workloads::{Backend, WorkloadKind, WorkloadSpec};

/// Most layers a row is grown to (a bound on the search, far above any model's).
pub const MAX_LAYERS: u32 = 4096;

/// Bytes a decode step should exceed on a machine with `llc_bytes` of last-level cache
/// (a sixteenth above the threshold, so block rounding cannot leave it just under).
pub fn target_bytes(llc_bytes: u64) -> u64 {
    LLC_FACTOR * llc_bytes / 16 * 17
}

/// `spec` with `layers` layers, the layer kinds repeated in order.
pub fn with_layers(spec: &WorkloadSpec, layers: u32) -> WorkloadSpec {
    let mut s = spec.clone();
    let kinds = &spec.shape.layer_kinds;
    s.shape.layer_kinds = (0..layers as usize)
        .map(|i| kinds[i % kinds.len().max(1)])
        .collect();
    s.shape.layers = layers;
    s
}

/// Layers `spec` needs so one decode step at its longest context reads more than
/// [`target_bytes`], or the most that fit in `available` bytes when fewer; `None` when the
/// row already reads enough, is not a CPU attention row, or nothing is known of the cache.
pub fn layers_for_memory(spec: &WorkloadSpec, llc_bytes: u64, available: u64) -> Option<u32> {
    if spec.kind != WorkloadKind::Attention || spec.backend != Backend::Cpu || llc_bytes == 0 {
        return None;
    }
    let target = target_bytes(llc_bytes);
    let bytes = |layers: u32| predicted_kv_bytes(&with_layers(spec, layers)).unwrap_or(0);
    let now = spec.shape.layers.max(1);
    let per_layer = bytes(now) / now as u64;
    if bytes(now) >= target || per_layer == 0 {
        return None;
    }
    let mut layers = (target.div_ceil(per_layer) as u32).clamp(now, MAX_LAYERS);
    while bytes(layers) < target && layers < MAX_LAYERS {
        layers += 1;
    }
    let layers = layers_that_fit(spec, layers, available);
    (layers > now).then_some(layers)
}

/// `wanted` layers, or fewer down to the row's own when memory would not hold them.
fn layers_that_fit(spec: &WorkloadSpec, wanted: u32, available: u64) -> u32 {
    let now = spec.shape.layers.max(1);
    let fits = |layers: u32| {
        let s = with_layers(spec, layers);
        let bytes = predicted_kv_bytes(&s).unwrap_or(0);
        MemoryNeed::of(&s, bytes).check(available).is_ok()
    };
    let mut layers = wanted.max(now);
    while layers > now && !fits(layers) {
        layers -= (layers - now).div_ceil(8).max(1);
    }
    layers
}

/// The rows of one comparison: the same shape, context and batch, differing only in
/// strategy, cache dtype or block size.
type Comparable = (String, u32, u32, u32, u32, Option<u32>, u32);

fn comparable(s: &WorkloadSpec) -> Comparable {
    (
        s.shape.name.clone(),
        s.shape.layers,
        s.prompt,
        s.gen,
        s.batch,
        s.window,
        s.shared_prefix,
    )
}

/// Grow the CPU attention rows of `specs` past [`target_bytes`]; returns one note per
/// distinct change for the user. Rows that differ only in strategy, dtype or block size
/// grow to the same layer count, the most any of them needs (so an int4 row is not timed
/// over more layers than its f16 twin and their tokens/s compare), as far as memory holds.
pub fn grow_attention_rows(
    specs: &mut [WorkloadSpec],
    llc_bytes: u64,
    available: u64,
) -> Vec<String> {
    let mut wanted: std::collections::HashMap<Comparable, u32> = Default::default();
    for spec in specs.iter() {
        if let Some(layers) = layers_for_memory(spec, llc_bytes, available) {
            let w = wanted.entry(comparable(spec)).or_insert(0);
            *w = (*w).max(layers);
        }
    }
    let mut notes = Vec::new();
    for spec in specs.iter_mut() {
        let Some(&want) = wanted.get(&comparable(spec)) else {
            continue;
        };
        let layers = layers_that_fit(spec, want, available);
        if layers <= spec.shape.layers {
            continue;
        }
        let note = format!(
            "{}: {} → {} layers, so a decode step reads more than {LLC_FACTOR} × the {} MiB \
             last-level cache{} (give --layers to choose, or --cache-resident to keep it small)",
            spec.shape.name,
            spec.shape.layers,
            layers,
            llc_bytes >> 20,
            if layers < want {
                format!(
                    " ({} only: memory holds no more)",
                    crate::runner::dtype_pair_label(spec)
                )
            } else {
                String::new()
            },
        );
        if !notes.contains(&note) {
            notes.push(note);
        }
        *spec = with_layers(spec, layers);
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};
    use kvbench_workloads::{OffloadConfig, Strategy};

    fn spec(kind: WorkloadKind, prompt: u32) -> WorkloadSpec {
        WorkloadSpec {
            kind,
            backend: Backend::Cpu,
            shape: ModelShape::uniform("t", 1, 8, 8, 64, 512, 1408),
            strategy: Strategy::Contiguous,
            k_dtype: CacheDtype::new(DtypeKind::F16),
            v_dtype: CacheDtype::new(DtypeKind::F16),
            batch: 1,
            prompt,
            gen: 32,
            block_size: 16,
            shared_prefix: 0,
            window: None,
            mlp: true,
            seed: 0,
            offload: OffloadConfig::default(),
        }
    }

    #[test]
    fn attention_rows_grow_past_four_times_the_cache() {
        // One layer at 8192 + 32 tokens: 8 heads × 64 × 2 (K, V) × 2 bytes = 2 KiB a token,
        // 8224 × 2048 = 16.06 MiB a layer (by hand). A 32 MiB L3 needs > 4 × 32 × 17/16 =
        // 136 MiB: ⌈136 / 16.0625⌉ = 9 layers.
        let s = spec(WorkloadKind::Attention, 8192);
        assert_eq!(predicted_kv_bytes(&s).unwrap(), 8224 * 2048);
        assert_eq!(layers_for_memory(&s, 32 << 20, u64::MAX), Some(9));
        // A 480 MiB L3: > 2040 MiB → ⌈2040 / 16.0625⌉ = 128 layers.
        assert_eq!(layers_for_memory(&s, 480 << 20, u64::MAX), Some(128));
        // Already large enough, a decoder row, or no cache figure: unchanged.
        assert_eq!(
            layers_for_memory(&with_layers(&s, 9), 32 << 20, u64::MAX),
            None
        );
        assert_eq!(
            layers_for_memory(&spec(WorkloadKind::Decoder, 8192), 32 << 20, u64::MAX),
            None
        );
        assert_eq!(layers_for_memory(&s, 0, u64::MAX), None);
    }

    #[test]
    fn growth_stops_at_what_memory_holds() {
        let s = spec(WorkloadKind::Attention, 8192);
        // 100 MiB available, 80 % usable: at most 4 layers of 16 MiB (plus the reference).
        let layers = layers_for_memory(&s, 480 << 20, 100 << 20).unwrap();
        let grown = with_layers(&s, layers);
        let need = MemoryNeed::of(&grown, predicted_kv_bytes(&grown).unwrap());
        assert!(need.check(100 << 20).is_ok() && layers > 1, "{layers}");
        let mut specs = vec![s.clone(), s];
        let notes = grow_attention_rows(&mut specs, 32 << 20, u64::MAX);
        assert_eq!(notes.len(), 1, "one note per distinct change: {notes:?}");
        assert!(specs
            .iter()
            .all(|s| s.shape.layers == 9 && s.shape.layer_kinds.len() == 9));
    }

    #[test]
    fn rows_that_compare_grow_to_the_same_layers() {
        // f16 needs 9 layers of 16.06 MiB for a 32 MiB L3 (above); int8 stores 8224 tokens ×
        // 8 heads × (64 codes + 4 B f32 scale) × 2 = 8.53 MiB a layer, so alone it needs
        // ⌈136 / 8.53⌉ = 16 layers: both rows get 16, and their tokens/s compare.
        let f16 = spec(WorkloadKind::Attention, 8192);
        let mut int8 = f16.clone();
        int8.k_dtype = CacheDtype::new(DtypeKind::Int8);
        int8.v_dtype = int8.k_dtype;
        assert_eq!(predicted_kv_bytes(&int8).unwrap(), 8224 * 8 * 68 * 2);
        let alone = layers_for_memory(&int8, 32 << 20, u64::MAX).unwrap();
        assert_eq!(alone, 16);
        let mut specs = vec![f16.clone(), int8];
        grow_attention_rows(&mut specs, 32 << 20, u64::MAX);
        assert!(specs.iter().all(|s| s.shape.layers == alone), "{specs:?}");
        // Another context is another comparison: it grows on its own (4128 × 2 KiB =
        // 8.06 MiB a layer: ⌈136 / 8.06⌉ = 17).
        let mut specs = vec![f16.clone(), spec(WorkloadKind::Attention, 4096)];
        grow_attention_rows(&mut specs, 32 << 20, u64::MAX);
        assert_eq!(specs[0].shape.layers, 9);
        assert_eq!(specs[1].shape.layers, 17);
    }
}
