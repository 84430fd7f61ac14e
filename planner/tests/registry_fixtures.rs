//! Every registry entry against the published config.json it cites (tests/fixtures/<key>.json).

use kvbench_planner::config::parse_config;
use kvbench_planner::registry;

fn fixture(key: &str) -> String {
    let path = format!("{}/tests/fixtures/{key}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

#[test]
fn every_entry_matches_its_config_json() {
    for info in registry::all() {
        let parsed = parse_config(&fixture(&info.key), &info.shape.name).unwrap();
        let (a, b) = (&info.shape, &parsed.shape);
        assert_eq!(
            (
                a.layers,
                a.q_heads,
                a.kv_heads,
                a.head_dim,
                a.hidden,
                a.intermediate
            ),
            (
                b.layers,
                b.q_heads,
                b.kv_heads,
                b.head_dim,
                b.hidden,
                b.intermediate
            ),
            "{}: layers, q_heads, kv_heads, head_dim, hidden, intermediate",
            info.key
        );
        assert_eq!(a.layer_kinds, b.layer_kinds, "{}: layer kinds", info.key);
        assert_eq!(info.vocab, parsed.vocab, "{}: vocab", info.key);
        assert_eq!(info.moe, parsed.moe, "{}: routed experts", info.key);
        assert_eq!(a.state, b.state, "{}: state layers", info.key);
        assert_eq!(a.v_head_dim, b.v_head_dim, "{}: v_head_dim", info.key);
        // Falcon's config has no max_position_embeddings (0 = not stated); its card says 2048.
        if parsed.max_context != 0 {
            assert_eq!(
                info.max_context, parsed.max_context,
                "{}: max context",
                info.key
            );
        }
    }
}

#[test]
fn parameter_estimate_from_config_is_near_the_published_count() {
    for info in registry::all() {
        let parsed = parse_config(&fixture(&info.key), &info.key).unwrap();
        let total = parsed.params / info.params - 1.0;
        let active = parsed.active_params / info.active_params - 1.0;
        eprintln!(
            "{:18} total {:8.2}B vs {:8.2}B ({:+.1}%), active {:7.2}B vs {:7.2}B ({:+.1}%)",
            info.key,
            parsed.params / 1e9,
            info.params / 1e9,
            100.0 * total,
            parsed.active_params / 1e9,
            info.active_params / 1e9,
            100.0 * active
        );
        // Gemma-3's published counts include its ~0.4B SigLIP vision tower, which a text
        // config does not describe.
        // Qwen3.5 and Gemma-3n likewise count their vision (and Gemma-3n audio) encoders.
        // Llama-4's 109B / 400B count its vision encoder and projector (Scout: 109.68B of
        // which the text model is ~107.8B).
        let multimodal = info.key.starts_with("gemma3")
            || info.key.starts_with("qwen3.5")
            || info.key.starts_with("llama4");
        let tolerance = if multimodal { 0.07 } else { 0.01 };
        assert!(
            total.abs() < tolerance,
            "{}: total off by {:.1}%",
            info.key,
            100.0 * total
        );
        // Published active counts differ in whether they count the embedding lookup; for
        // Qwen3-Next's "3B activated" the 0.62B of embedding and LM head is most of the gap.
        let active_tolerance = if info.key.starts_with("qwen3-next") {
            0.25
        } else {
            0.17
        };
        assert!(
            active.abs() < active_tolerance,
            "{}: active off by {:.1}%",
            info.key,
            100.0 * active
        );
    }
}
