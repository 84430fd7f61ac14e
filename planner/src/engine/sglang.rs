//! SGLang's startup memory rule, from its source
//! (`python/sglang/srt/model_executor/model_runner.py` `profile_max_num_token`):
//!
//! `rest = available_after_weights - total x (1 - mem_fraction_static)` and
//! `max_total_num_tokens = rest // cell_size`, aligned down to the page size, where
//! `cell_size` is the KV bytes of one token over all layers on the GPU and
//! `available_after_weights` is the free memory once the weights are loaded (total less the
//! CUDA context, NCCL buffers and the weights). So the KV cache gets
//! total x mem_fraction_static - weights - runtime, and activations and CUDA graphs live in
//! the (1 - mem_fraction_static) part.
//!
//! `mem_fraction_static`'s default (`server_args.py`, the tp-based rule of SGLang <= 0.4):
//! 0.79 at tp >= 16, 0.81 at tp >= 8, 0.85 at tp >= 4, 0.87 at tp >= 2, else 0.88. Newer
//! releases derive it from the GPU's memory and the chunked-prefill and CUDA-graph sizes;
//! pass --mem-util to follow a given server.

use super::{EngineOptions, Reserve, ReserveComponent};

const GIB: u64 = 1 << 30;

/// How SGLang caches chunked local-attention layers by default: as full attention. Its
/// Llama-4 hybrid cache (sgl-project/sglang#6563) splits the pool only when
/// `--hybrid-kvcache-ratio` is given.
pub const CHUNKED_RULE: &str = "SGLang: chunked local-attention layers cached as full attention (its hybrid Llama-4 cache needs --hybrid-kvcache-ratio, off by default)";

/// SGLang's default page size (tokens per KV page) for its default attention backends.
pub const DEFAULT_PAGE_SIZE: u32 = 1;

/// The tp-based default of `mem_fraction_static`.
pub fn default_mem_fraction_static(tp: u32) -> f64 {
    match tp {
        t if t >= 16 => 0.79,
        t if t >= 8 => 0.81,
        t if t >= 4 => 0.85,
        t if t >= 2 => 0.87,
        _ => 0.88,
    }
}

/// What SGLang's free-memory measurement already excludes besides weights: the CUDA context
/// (~0.5 GiB on Hopper) and, with tp > 1, NCCL buffers.
pub fn reserve(tp: u32, opts: &EngineOptions) -> Reserve {
    let (bytes, rule) = match opts.overrides.non_torch {
        Some(b) => (b, "given (--reserve-non-torch)".to_string()),
        None if tp > 1 => (GIB, format!("CUDA context + NCCL buffers at tp {tp}")),
        None => (GIB / 2, "CUDA context".to_string()),
    };
    Reserve {
        components: vec![ReserveComponent {
            name: "runtime",
            bytes,
            rule,
        }],
        follows:
            "SGLang profile_max_num_token (activations and graphs sit in 1 - mem_fraction_static)"
                .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_follows_the_tp_table() {
        assert_eq!(default_mem_fraction_static(1), 0.88);
        assert_eq!(default_mem_fraction_static(2), 0.87);
        assert_eq!(default_mem_fraction_static(8), 0.81);
    }
}
