//! Reading a vLLM server log (handed over as text) and setting kvbench's figures beside the
//! ones it logged.
//!
//! Lines read (vLLM v1 engine, 0.8 and later):
//! - `vLLM API server version X` / `Initializing a V1 LLM engine (vX) with config: ...`;
//! - `non-default args: {...}` (model, tensor/pipeline_parallel_size, max_model_len,
//!   gpu_memory_utilization, kv_cache_dtype, max_num_batched_tokens, max_num_seqs,
//!   enforce_eager) or the engine-config line's `key=value` pairs;
//! - `Model loading took X GiB`; `Estimated CUDA graph memory: X GiB total`;
//!   `Available KV cache memory: X GiB`; `GPU KV cache size: N tokens`;
//!   `Maximum concurrency for N tokens per request: Xx`;
//! - whether the hybrid KV cache manager was off (`disable_hybrid_kv_cache_manager`, the
//!   warnings "Hybrid KV cache manager is disabled for this hybrid model", "Turning off
//!   hybrid kv cache manager because `--kv-transfer-config` ..." and "There is a
//!   latency regression when using chunked local attention with the hybrid KV cache manager.
//!   Disabling it, by default.").

use serde::Serialize;

use crate::error::PlanError;

/// What a vLLM startup log says about one deployment (None where the log lacks the line).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoggedRun {
    pub version: Option<String>,
    pub model: Option<String>,
    pub tp: Option<u32>,
    pub pp: Option<u32>,
    pub max_model_len: Option<u32>,
    pub gpu_memory_utilization: Option<f64>,
    pub kv_cache_dtype: Option<String>,
    pub max_num_batched_tokens: Option<u32>,
    pub max_num_seqs: Option<u32>,
    pub enforce_eager: Option<bool>,
    /// "Model loading took X GiB".
    pub weights_gib: Option<f64>,
    /// "Estimated CUDA graph memory: X GiB total".
    pub cuda_graph_gib: Option<f64>,
    /// "Available KV cache memory: X GiB" (the first such line).
    pub available_kv_gib: Option<f64>,
    /// Each "Available KV cache memory" line that names its worker, as (global rank, GiB):
    /// with pipeline parallelism every stage logs its own budget.
    pub available_kv_by_rank: Vec<(u32, f64)>,
    /// "GPU KV cache size: N tokens".
    pub kv_tokens: Option<u64>,
    /// "Maximum concurrency for N tokens per request: Xx" as (N, X).
    pub concurrency: Option<(u32, f64)>,
    /// A GPU name the log mentions (e.g. "NVIDIA H100 80GB HBM3"), when it does.
    pub gpu_name: Option<String>,
    /// The hybrid KV cache manager was off: `disable_hybrid_kv_cache_manager` among the
    /// args, or the warning "Hybrid KV cache manager is disabled for this hybrid model".
    pub hybrid_kv_disabled: bool,
    /// The warning that chunked local attention turned the hybrid manager off by default
    /// (vLLM 0.10.1 to 0.13, or VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE=0).
    pub chunked_kv_full: bool,
}

impl LoggedRun {
    /// The lines a check needs that this log lacks, by the text kvbench looks for.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.model.is_none() {
            m.push("the model (non-default args or engine config line)");
        }
        if self.weights_gib.is_none() {
            m.push("'Model loading took ... GiB'");
        }
        if self.available_kv_gib.is_none() {
            m.push("'Available KV cache memory: ... GiB'");
        }
        if self.kv_tokens.is_none() {
            m.push("'GPU KV cache size: ... tokens'");
        }
        if self.concurrency.is_none() {
            m.push("'Maximum concurrency for ... tokens per request'");
        }
        m
    }
}

/// The text after `key` up to the first character in `stops`, trimmed of quotes.
fn value_after<'a>(line: &'a str, key: &str, stops: &[char]) -> Option<&'a str> {
    let at = line.find(key)? + key.len();
    let rest = &line[at..];
    let end = rest.find(|c| stops.contains(&c)).unwrap_or(rest.len());
    let v = rest[..end].trim().trim_matches(|c| c == '\'' || c == '"');
    (!v.is_empty()).then_some(v)
}

/// The first number (digits, `,`, `.`) after `key`.
fn number_after(line: &str, key: &str) -> Option<f64> {
    let at = line.find(key)? + key.len();
    let rest = line[at..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ',' || c == '.'))
        .unwrap_or(rest.len());
    rest[..end]
        .trim_end_matches('.')
        .replace(',', "")
        .parse()
        .ok()
}

/// A `key: value` of the non-default-args dict or a `key=value` of the engine-config line.
fn arg(line: &str, key: &str) -> Option<String> {
    for pat in [format!("'{key}': "), format!(" {key}=")] {
        if let Some(v) = value_after(line, &pat, &[',', '}', ')']) {
            return Some(v.to_string());
        }
    }
    None
}

/// The word after `key` on the ASCII-art banner vLLM >= 0.18 prints (`█ version 0.19.0`,
/// `█ model openai/gpt-oss-20b`), when the line is such a banner line.
fn banner_word<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("█ {key} "))? + "█ ".len() + key.len() + 1;
    line[at..].split_whitespace().next()
}

/// The global rank a worker's line names, as `(VllmWorker rank=3 pid=..)` writes it.
fn worker_rank(line: &str) -> Option<u32> {
    let at = line.find("rank=")? + "rank=".len();
    let digits: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Parses a vLLM server log. Refuses a log with nothing recognisable, an SGLang log and a
/// V0-engine log, each in one line saying so.
pub fn parse(text: &str) -> Result<LoggedRun, PlanError> {
    if text.contains("max_total_num_tokens=")
        || text.contains("KV Cache is allocated. #tokens")
        || text.contains("sglang.launch_server")
    {
        return Err(PlanError::VllmLog(
            "this is an SGLang log (it reports max_total_num_tokens); --vllm-log reads vLLM server logs — size SGLang with --engine sglang".to_string(),
        ));
    }
    if text.contains("# GPU blocks:") || text.contains("# gpu blocks:") {
        return Err(PlanError::VllmLog(
            "this log is from a vLLM before 0.7.3 (it logs '# GPU blocks: N', not 'GPU KV cache size: N tokens'), whose profiling differs; kvbench checks logs of vLLM's V1 engine from 0.8 on".to_string(),
        ));
    }
    let mut r = LoggedRun::default();
    for line in text.lines() {
        if let Some(v) = value_after(line, "vLLM API server version ", &[' ', '\n'])
            .or_else(|| value_after(line, "LLM engine (v", &[')']))
            .or_else(|| banner_word(line, "version"))
        {
            r.version.get_or_insert(v.to_string());
        }
        if r.model.is_none() {
            r.model = banner_word(line, "model").map(str::to_string);
        }
        if line.contains("non-default args:") || line.contains("with config:") {
            let model = arg(line, "model").or_else(|| arg(line, "model_tag"));
            if r.model.is_none() {
                r.model = model;
            }
            let u = |k: &str| arg(line, k).and_then(|v| v.parse::<u32>().ok());
            r.tp = r.tp.or(u("tensor_parallel_size"));
            r.pp = r.pp.or(u("pipeline_parallel_size"));
            r.max_model_len = r.max_model_len.or(u("max_model_len")).or(u("max_seq_len"));
            r.max_num_batched_tokens = r.max_num_batched_tokens.or(u("max_num_batched_tokens"));
            r.max_num_seqs = r.max_num_seqs.or(u("max_num_seqs"));
            r.gpu_memory_utilization =
                r.gpu_memory_utilization
                    .or(arg(line, "gpu_memory_utilization").and_then(|v| v.parse().ok()));
            if r.kv_cache_dtype.is_none() {
                r.kv_cache_dtype = arg(line, "kv_cache_dtype");
            }
            if r.enforce_eager.is_none() {
                r.enforce_eager = arg(line, "enforce_eager").map(|v| v == "True" || v == "true");
            }
            if arg(line, "disable_hybrid_kv_cache_manager").is_some_and(|v| v == "True") {
                r.hybrid_kv_disabled = true;
            }
        }
        if line.contains("Hybrid KV cache manager is disabled")
            || line.contains("Turning off hybrid kv cache manager")
        {
            r.hybrid_kv_disabled = true;
        }
        if line.contains("chunked local attention with the hybrid KV cache manager") {
            r.chunked_kv_full = true;
        }
        if let Some(at) = line.find("vllm serve ") {
            // A pasted command line: `vllm serve MODEL --tensor-parallel-size N ...`.
            let words: Vec<&str> = line[at + "vllm serve ".len()..]
                .split_whitespace()
                .collect();
            if let Some(m) = words.first().filter(|w| !w.starts_with('-')) {
                r.model.get_or_insert(m.trim_matches('\'').to_string());
            }
            let flag = |names: &[&str]| {
                words
                    .windows(2)
                    .find(|w| names.contains(&w[0]))
                    .map(|w| w[1].to_string())
            };
            r.tp =
                r.tp.or(flag(&["--tensor-parallel-size", "-tp"]).and_then(|v| v.parse().ok()));
            r.pp =
                r.pp.or(flag(&["--pipeline-parallel-size", "-pp"]).and_then(|v| v.parse().ok()));
            r.max_model_len = r
                .max_model_len
                .or(flag(&["--max-model-len"]).and_then(|v| v.parse().ok()));
            r.gpu_memory_utilization = r
                .gpu_memory_utilization
                .or(flag(&["--gpu-memory-utilization"]).and_then(|v| v.parse().ok()));
            if r.kv_cache_dtype.is_none() {
                r.kv_cache_dtype = flag(&["--kv-cache-dtype"]);
            }
            if words.contains(&"--enforce-eager") {
                r.enforce_eager = Some(true);
            }
            if words.contains(&"--disable-hybrid-kv-cache-manager") {
                r.hybrid_kv_disabled = true;
            }
        }
        if line.contains("Chunked prefill is enabled with max_num_batched_tokens=") {
            r.max_num_batched_tokens =
                r.max_num_batched_tokens
                    .or(number_after(line, "max_num_batched_tokens=").map(|v| v as u32));
        }
        if line.contains("Using max model len") {
            r.max_model_len = r
                .max_model_len
                .or(number_after(line, "Using max model len").map(|v| v as u32));
        }
        if let Some(v) = number_after(line, "Model loading took") {
            r.weights_gib.get_or_insert(v);
        }
        if let Some(v) = number_after(line, "Estimated CUDA graph memory:") {
            r.cuda_graph_gib.get_or_insert(v);
        }
        if let Some(v) = number_after(line, "Available KV cache memory:") {
            r.available_kv_gib.get_or_insert(v);
            if let Some(rank) = worker_rank(line) {
                r.available_kv_by_rank.push((rank, v));
            }
        }
        if let Some(v) = number_after(line, "GPU KV cache size:") {
            r.kv_tokens.get_or_insert(v as u64);
        }
        if line.contains("Maximum concurrency for") {
            if let (Some(n), Some(x)) = (
                number_after(line, "Maximum concurrency for"),
                number_after(line, "tokens per request:"),
            ) {
                r.concurrency.get_or_insert((n as u32, x));
            }
        }
        for gpu in ["H100", "H200", "A100", "L40S", "B200", "H20"] {
            if let Some(at) = line.find(&format!("NVIDIA {gpu}")) {
                let name: String = line[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == ' ' || *c == '-')
                    .collect();
                r.gpu_name.get_or_insert(name.trim().to_string());
            }
        }
    }
    // "Maximum concurrency for N tokens per request" is logged at max_model_len.
    if r.max_model_len.is_none() {
        r.max_model_len = r.concurrency.map(|c| c.0);
    }
    let nothing = r.model.is_none()
        && r.weights_gib.is_none()
        && r.available_kv_gib.is_none()
        && r.kv_tokens.is_none();
    if nothing {
        return Err(PlanError::VllmLog(
            "no vLLM startup line found (looked for 'non-default args', 'Model loading took', 'Available KV cache memory', 'GPU KV cache size'); give the log of a vLLM server's start".to_string(),
        ));
    }
    Ok(r)
}

impl LoggedRun {
    /// The version whose rules apply: None for a source build without tags, which vLLM's
    /// setuptools-scm fallback names `0.1.devN+g<sha>` (its number says nothing of its rules).
    pub fn rules_version(&self) -> Option<&str> {
        self.version
            .as_deref()
            .filter(|v| !v.starts_with("0.1.dev"))
    }
}

/// The kvbench cache dtype name for vLLM's `kv_cache_dtype` ("auto" = the model's dtype).
pub fn cache_dtype_name(kv_cache_dtype: Option<&str>) -> &'static str {
    match kv_cache_dtype.unwrap_or("auto") {
        "fp8" | "fp8_e4m3" => "fp8-e4m3",
        "fp8_e5m2" => "fp8-e5m2",
        "float16" | "half" => "f16",
        _ => "bf16",
    }
}

/// One logged figure beside kvbench's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckRow {
    pub figure: &'static str,
    pub logged: String,
    pub kvbench: String,
    /// kvbench - logged, relative to logged (None when not comparable).
    pub diff: Option<f64>,
    /// The component that explains the difference.
    pub explained_by: String,
}

/// kvbench's figures for the deployment the log describes.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicted {
    pub weights_bytes: u64,
    pub weights_source: String,
    pub kv_budget_bytes: u64,
    pub reserve_note: String,
    /// Token capacity as the log's vLLM version reports it.
    pub kv_tokens: u64,
    pub token_rule: String,
    pub concurrency: f64,
    /// How the pool groups the layers (which layers are cached as full attention).
    pub allocator_rule: String,
}

const GIB: f64 = (1u64 << 30) as f64;

/// The rows of a check: each logged figure, kvbench's, the difference and its cause.
pub fn compare(log: &LoggedRun, p: &Predicted) -> Vec<CheckRow> {
    let rel = |k: f64, l: f64| (l != 0.0).then(|| (k - l) / l);
    let mut rows = Vec::new();
    if let Some(w) = log.weights_gib {
        let k = p.weights_bytes as f64 / GIB;
        rows.push(CheckRow {
            figure: "weights per GPU (Model loading took)",
            logged: format!("{w:.2} GiB"),
            kvbench: format!("{k:.2} GiB"),
            diff: rel(k, w),
            explained_by: format!("weights from {}", p.weights_source),
        });
    }
    if let Some(a) = log.available_kv_gib {
        let k = p.kv_budget_bytes as f64 / GIB;
        rows.push(CheckRow {
            figure: "Available KV cache memory",
            logged: format!("{a:.2} GiB"),
            kvbench: format!("{k:.2} GiB"),
            diff: rel(k, a),
            explained_by: format!("weights difference + reserve ({})", p.reserve_note),
        });
    }
    if let Some(t) = log.kv_tokens {
        rows.push(CheckRow {
            figure: "GPU KV cache size (tokens)",
            logged: t.to_string(),
            kvbench: p.kv_tokens.to_string(),
            diff: rel(p.kv_tokens as f64, t as f64),
            explained_by: format!("KV memory difference; {}", p.token_rule),
        });
    }
    if let Some((n, x)) = log.concurrency {
        rows.push(CheckRow {
            figure: "Maximum concurrency",
            logged: format!("{x:.2}x at {n} tokens"),
            kvbench: format!("{:.2}x", p.concurrency),
            diff: rel(p.concurrency, x),
            explained_by: format!("token capacity difference; {}", p.allocator_rule),
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_startup_lines() {
        // Lines as vLLM 0.11 prints them (format from vllm/v1/worker/gpu_worker.py and
        // vllm/v1/core/kv_cache_utils.py).
        let log = "(APIServer pid=1) INFO 10-03 [api_server.py:1] vLLM API server version 0.11.0\n\
(APIServer pid=1) INFO [utils.py:250] non-default args: {'model_tag': 'Qwen/Qwen3-14B', 'model': 'Qwen/Qwen3-14B', 'max_model_len': 32768, 'tensor_parallel_size': 2, 'gpu_memory_utilization': 0.85, 'kv_cache_dtype': 'fp8', 'enforce_eager': True}\n\
(EngineCore_DP0 pid=2) INFO [gpu_model_runner.py:2] Model loading took 13.91 GiB and 5.1 seconds\n\
(EngineCore_DP0 pid=2) INFO [gpu_worker.py:298] Available KV cache memory: 6.51 GiB\n\
(EngineCore_DP0 pid=2) INFO [kv_cache_utils.py:864] GPU KV cache size: 42,656 tokens\n\
(EngineCore_DP0 pid=2) INFO [kv_cache_utils.py:868] Maximum concurrency for 32,768 tokens per request: 1.30x\n";
        let r = parse(log).unwrap();
        assert_eq!(r.version.as_deref(), Some("0.11.0"));
        assert_eq!(r.model.as_deref(), Some("Qwen/Qwen3-14B"));
        assert_eq!((r.tp, r.max_model_len), (Some(2), Some(32768)));
        assert_eq!(r.gpu_memory_utilization, Some(0.85));
        assert_eq!(r.kv_cache_dtype.as_deref(), Some("fp8"));
        assert_eq!(r.enforce_eager, Some(true));
        assert_eq!(r.weights_gib, Some(13.91));
        assert_eq!(r.available_kv_gib, Some(6.51));
        assert_eq!(r.kv_tokens, Some(42_656));
        assert_eq!(r.concurrency, Some((32_768, 1.30)));
        assert!(r.missing().is_empty());
    }

    #[test]
    fn hybrid_manager_off_is_read_from_args_and_warnings() {
        // The chunked-attention warning as a vLLM 0.12 Llama-4-Scout server printed it
        // (quoted in github.com/fuhengwu2021/coderepo extra/HYBRID_KV_CACHE_ANALYSIS.md).
        let log = "(APIServer pid=1) WARNING 12-18 12:20:12 [vllm.py:921] There is a latency regression when using chunked local attention with the hybrid KV cache manager. Disabling it, by default. To enable it, set the environment VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE=1.\n\
(EngineCore_DP0 pid=2) INFO [gpu_worker.py:298] Available KV cache memory: 89.71 GiB\n";
        let r = parse(log).unwrap();
        assert!(r.chunked_kv_full && !r.hybrid_kv_disabled);
        let args = "INFO [utils.py:250] non-default args: {'model': 'google/gemma-3-12b-it', 'disable_hybrid_kv_cache_manager': True}\n";
        assert!(parse(args).unwrap().hybrid_kv_disabled);
        let connector = "WARNING [vllm.py:1] Turning off hybrid kv cache manager because `--kv-transfer-config` is set.\nINFO Available KV cache memory: 10.00 GiB\n";
        assert!(parse(connector).unwrap().hybrid_kv_disabled);
        let plain = "INFO [gpu_worker.py:298] Available KV cache memory: 89.71 GiB\n";
        let r = parse(plain).unwrap();
        assert!(!r.chunked_kv_full && !r.hybrid_kv_disabled);
    }

    #[test]
    fn banner_dev_builds_and_worker_ranks() {
        let log = "(APIServer pid=1) INFO [utils.py:299] ▄▄ ▄█ █ █ █ ▀▄▀ █ version 0.19.0\n\
(APIServer pid=1) INFO [utils.py:299] █▄█▀ █ █ █ █ model openai/gpt-oss-20b\n\
(VllmWorker rank=3 pid=9) INFO [gpu_worker.py:233] Available KV cache memory: 11.33 GiB\n\
(VllmWorker rank=0 pid=7) INFO [gpu_worker.py:233] Available KV cache memory: 12.13 GiB\n";
        let r = parse(log).unwrap();
        assert_eq!(r.version.as_deref(), Some("0.19.0"));
        assert_eq!(r.rules_version(), Some("0.19.0"));
        assert_eq!(r.model.as_deref(), Some("openai/gpt-oss-20b"));
        assert_eq!(r.available_kv_gib, Some(11.33));
        assert_eq!(r.available_kv_by_rank, vec![(3, 11.33), (0, 12.13)]);
        let r = parse("INFO [api_server.py:1623] vLLM API server version 0.1.dev7548+gbaba038\nGPU KV cache size: 16 tokens").unwrap();
        assert_eq!(r.version.as_deref(), Some("0.1.dev7548+gbaba038"));
        assert_eq!(r.rules_version(), None);
    }

    #[test]
    fn foreign_or_empty_logs_are_one_clear_line() {
        let e = parse("hello\nworld\n").unwrap_err().to_string();
        assert!(e.contains("no vLLM startup line"), "{e}");
        let e = parse("[2025] max_total_num_tokens=123, chunked_prefill_size=8192")
            .unwrap_err()
            .to_string();
        assert!(e.contains("SGLang"), "{e}");
        let e = parse("INFO # GPU blocks: 1381, # CPU blocks: 2048")
            .unwrap_err()
            .to_string();
        assert!(e.contains("before 0.7.3"), "{e}");
        let r = parse("INFO GPU KV cache size: 1,000 tokens").unwrap();
        assert!(r.missing().iter().any(|m| m.contains("Model loading")));
    }
}
