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
//!
//! A line read here whose figure is not as vLLM prints it, or a setting vLLM could not have
//! run with, is refused in one line naming it: skipped or read in part, it would put a wrong
//! figure beside kvbench's, or claim the log lacks the line.

use std::borrow::Cow;

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

/// What each refusal of a logged figure tells the user to do.
const FIX_FIGURE: &str = "give the log as vLLM printed it";

/// At most 40 characters of `text`, control characters shown as `?`: a message quotes what
/// it refuses without printing a 20-million-digit number or breaking its one line.
fn shown(text: &str) -> String {
    let mut s: String = text
        .chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(40).is_some() {
        s.push('…');
    }
    s
}

/// A recognised line whose figure kvbench cannot take, in one line naming the line's key.
fn bad_figure(key: &str, text: &str, why: &str) -> PlanError {
    PlanError::VllmLog(format!(
        "'{}' line: '{}' {why}; {FIX_FIGURE}",
        key.trim_end_matches(':'),
        shown(text)
    ))
}

/// A setting the log gives (tensor_parallel_size, --max-model-len, ...) that vLLM could not
/// have run with: one line naming it, its value and where in the log it was.
fn bad_setting(name: &str, value: &str, from: &str, wanted: &str) -> PlanError {
    PlanError::VllmLog(format!(
        "{name} = '{}' in {from} is not {wanted}; correct it to the value vLLM ran with",
        shown(value)
    ))
}

/// The whitespace-separated words after `key`, or None when the line lacks `key`.
fn words_after<'a>(line: &'a str, key: &str) -> Option<std::str::SplitWhitespace<'a>> {
    let at = line.find(key)? + key.len();
    Some(line[at..].split_whitespace())
}

/// A count as vLLM prints it (`42,656`, `8192`): digits, optionally in thousands groups.
/// Signs, points and exponents are refused, never cut off.
fn count(text: &str) -> Result<u64, &'static str> {
    if text.starts_with('-') {
        return Err("is negative");
    }
    let groups: Vec<&str> = text.split(',').collect();
    let digits = |g: &&str| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit());
    let grouped = groups[0].len() <= 3 && groups[1..].iter().all(|g| g.len() == 3);
    if !groups.iter().all(digits) || (groups.len() > 1 && !grouped) {
        return Err("is not a count (digits, in groups of three when commas are used)");
    }
    text.replace(',', "")
        .parse()
        .map_err(|_| "does not fit in 64 bits")
}

/// A count that must fit in 32 bits (a token count per request, a setting).
fn count_u32(text: &str) -> Result<u32, &'static str> {
    u32::try_from(count(text)?).map_err(|_| "is more than 4294967295")
}

/// A decimal as vLLM prints it (`13.91`, `1.30`): digits with at most one point. Signs,
/// exponents, `inf` and `nan` are refused rather than read in part.
fn decimal(text: &str) -> Result<f64, &'static str> {
    if text.starts_with('-') {
        return Err("is negative");
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return Err("is not a decimal number (digits with at most one point)");
    }
    let v: f64 = text.parse().map_err(|_| "is not a decimal number")?;
    if !v.is_finite() {
        return Err("is too large to be a figure");
    }
    Ok(v)
}

/// GiB per unit of the memory figures (vLLM prints GiB; the others convert exactly).
const MEMORY_UNITS: [(&str, f64); 5] = [
    ("GiB", 1.0),
    ("MiB", 1.0 / 1024.0),
    ("KiB", 1.0 / (1024.0 * 1024.0)),
    ("TiB", 1024.0),
    ("GB", 1e9 / GIB),
];

/// A memory figure in GiB must give a byte count that fits in 64 bits (16 EiB).
const MAX_GIB: f64 = (1u64 << 34) as f64;

/// The memory figure after `key` (`Available KV cache memory: 6.51 GiB`) in GiB; None when
/// the line lacks `key`.
fn memory_after(line: &str, key: &str) -> Result<Option<f64>, PlanError> {
    let Some(mut words) = words_after(line, key) else {
        return Ok(None);
    };
    let value = words.next().unwrap_or("");
    let v = decimal(value).map_err(|why| bad_figure(key, value, why))?;
    let unit = words.next().unwrap_or("");
    let Some(&(_, per_unit)) = MEMORY_UNITS.iter().find(|(u, _)| *u == unit) else {
        let why = if unit.is_empty() {
            "has no unit (GiB)".to_string()
        } else {
            format!("has unit '{}', not GiB, MiB, KiB, TiB or GB", shown(unit))
        };
        return Err(bad_figure(key, value, &why));
    };
    let gib = v * per_unit;
    if gib >= MAX_GIB {
        return Err(bad_figure(key, value, "is more than 16 EiB"));
    }
    Ok(Some(gib))
}

/// The token count of `GPU KV cache size: N tokens`; None when the line lacks the key.
fn kv_tokens_after(line: &str) -> Result<Option<u64>, PlanError> {
    const KEY: &str = "GPU KV cache size:";
    let Some(mut words) = words_after(line, KEY) else {
        return Ok(None);
    };
    let value = words.next().unwrap_or("");
    let n = count(value).map_err(|why| bad_figure(KEY, value, why))?;
    if words.next() != Some("tokens") {
        return Err(bad_figure(KEY, value, "is not followed by 'tokens'"));
    }
    Ok(Some(n))
}

/// (N, X) of `Maximum concurrency for N tokens per request: Xx`; None when the line lacks
/// the key. N is the max_model_len, so it must be a positive 32-bit count.
fn concurrency_after(line: &str) -> Result<Option<(u32, f64)>, PlanError> {
    const KEY: &str = "Maximum concurrency for";
    const PER: &str = "tokens per request:";
    let Some(mut words) = words_after(line, KEY) else {
        return Ok(None);
    };
    let n_text = words.next().unwrap_or("");
    let n = count_u32(n_text).map_err(|why| bad_figure(KEY, n_text, why))?;
    if n == 0 {
        return Err(bad_figure(KEY, n_text, "is not a positive token count"));
    }
    let Some(mut after) = words_after(line, PER) else {
        return Err(bad_figure(
            KEY,
            n_text,
            "is not followed by 'tokens per request: Xx'",
        ));
    };
    let x_text = after.next().unwrap_or("");
    let Some(x) = x_text.strip_suffix('x') else {
        return Err(bad_figure(KEY, x_text, "does not end in 'x'"));
    };
    let x = decimal(x).map_err(|why| bad_figure(KEY, x_text, why))?;
    Ok(Some((n, x)))
}

/// A setting that must be a positive 32-bit integer (tp, pp, max_model_len, ...).
fn positive_setting(name: &str, value: &str, from: &str) -> Result<u32, PlanError> {
    match count_u32(value) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad_setting(
            name,
            value,
            from,
            "a positive integer up to 4294967295",
        )),
    }
}

/// gpu_memory_utilization: a fraction in (0, 1], as vLLM requires.
fn fraction_setting(name: &str, value: &str, from: &str) -> Result<f64, PlanError> {
    match value.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(bad_setting(name, value, from, "a fraction in (0, 1]")),
    }
}

/// kv_cache_dtype: one of vLLM's names (kept as the log gives it).
fn dtype_setting(name: &str, value: &str, from: &str) -> Result<String, PlanError> {
    match kvbench_cache_dtype(value) {
        Some(_) => Ok(value.to_string()),
        None => Err(bad_setting(name, value, from, VLLM_KV_DTYPES)),
    }
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

/// A `key: value` of the non-default-args dict or a `key=value` of the engine-config line;
/// None when absent or Python's `None` (vLLM's "not set").
fn arg(line: &str, key: &str) -> Option<String> {
    for pat in [format!("'{key}': "), format!(" {key}=")] {
        if let Some(v) = value_after(line, &pat, &[',', '}', ')']) {
            return (v != "None").then(|| v.to_string());
        }
    }
    None
}

/// The value of `--flag value` or `--flag=value` on a pasted command line (the first given,
/// under any of `names`); an empty value when the flag ends the line.
fn flag_value(words: &[&str], names: &[&str]) -> Option<String> {
    words.iter().enumerate().find_map(|(i, word)| {
        let (name, inline) = match word.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (*word, None),
        };
        if !names.contains(&name) {
            return None;
        }
        let value = inline.or_else(|| words.get(i + 1).copied()).unwrap_or("");
        Some(value.trim_matches(|c| c == '\'' || c == '"').to_string())
    })
}

/// The flag names of vLLM's arg `key` on a command line (`tensor_parallel_size` is
/// `--tensor-parallel-size` or `-tp`).
fn flag_names(key: &str) -> Vec<String> {
    let mut names = vec![format!("--{}", key.replace('_', "-"))];
    match key {
        "tensor_parallel_size" => names.push("-tp".to_string()),
        "pipeline_parallel_size" => names.push("-pp".to_string()),
        _ => {}
    }
    names
}

/// Sets the settings one line gives (the first value read wins), each checked as vLLM checks
/// it. `get(key)` is vLLM's arg `key` (snake_case) on that line, as (the name it has there,
/// its value); `from` says where the line is, for messages.
fn read_settings(
    r: &mut LoggedRun,
    from: &str,
    get: impl Fn(&str) -> Option<(String, String)>,
) -> Result<(), PlanError> {
    let positive = |key: &str| {
        get(key)
            .map(|(name, v)| positive_setting(&name, &v, from))
            .transpose()
    };
    r.tp = r.tp.or(positive("tensor_parallel_size")?);
    r.pp = r.pp.or(positive("pipeline_parallel_size")?);
    r.max_model_len = r.max_model_len.or(positive("max_model_len")?);
    r.max_model_len = r.max_model_len.or(positive("max_seq_len")?);
    r.max_num_batched_tokens = r
        .max_num_batched_tokens
        .or(positive("max_num_batched_tokens")?);
    r.max_num_seqs = r.max_num_seqs.or(positive("max_num_seqs")?);
    let utilization = get("gpu_memory_utilization")
        .map(|(name, v)| fraction_setting(&name, &v, from))
        .transpose()?;
    r.gpu_memory_utilization = r.gpu_memory_utilization.or(utilization);
    let dtype = get("kv_cache_dtype")
        .map(|(name, v)| dtype_setting(&name, &v, from))
        .transpose()?;
    if r.kv_cache_dtype.is_none() {
        r.kv_cache_dtype = dtype;
    }
    Ok(())
}

/// Reads a `non-default args: {...}` or engine-config (`with config: ...`) line.
fn read_args_line(line: &str, r: &mut LoggedRun) -> Result<(), PlanError> {
    if r.model.is_none() {
        r.model = arg(line, "model").or_else(|| arg(line, "model_tag"));
    }
    let from = if line.contains("non-default args:") {
        "the log's non-default args"
    } else {
        "the log's engine config line"
    };
    read_settings(r, from, |key| arg(line, key).map(|v| (key.to_string(), v)))?;
    if r.enforce_eager.is_none() {
        r.enforce_eager = arg(line, "enforce_eager").map(|v| v == "True" || v == "true");
    }
    if arg(line, "disable_hybrid_kv_cache_manager").is_some_and(|v| v == "True") {
        r.hybrid_kv_disabled = true;
    }
    Ok(())
}

/// Reads a pasted command line: `vllm serve MODEL --tensor-parallel-size N ...`.
fn read_serve_line(command: &str, r: &mut LoggedRun) -> Result<(), PlanError> {
    let words: Vec<&str> = command.split_whitespace().collect();
    if let Some(m) = words.first().filter(|w| !w.starts_with('-')) {
        r.model.get_or_insert(m.trim_matches('\'').to_string());
    }
    read_settings(r, "the log's `vllm serve` line", |key| {
        let names = flag_names(key);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        flag_value(&words, &names).map(|v| (names[0].to_string(), v))
    })?;
    if words.contains(&"--enforce-eager") {
        r.enforce_eager = Some(true);
    }
    if words.contains(&"--disable-hybrid-kv-cache-manager") {
        r.hybrid_kv_disabled = true;
    }
    Ok(())
}

/// A setting vLLM logs on a line of its own (`... max_num_batched_tokens=2048.`); None when
/// the line lacks `key`.
fn line_setting(line: &str, key: &str, name: &str) -> Result<Option<u32>, PlanError> {
    let Some(mut words) = words_after(line, key) else {
        return Ok(None);
    };
    let value = words.next().unwrap_or("").trim_end_matches('.');
    let from = format!("the log's '{}' line", key.trim_end_matches([' ', '=']));
    positive_setting(name, value, &from).map(Some)
}

/// Reads the figures a line logs (each check's "vLLM logged" column).
fn read_figures(line: &str, r: &mut LoggedRun) -> Result<(), PlanError> {
    if let Some(v) = memory_after(line, "Model loading took")? {
        r.weights_gib.get_or_insert(v);
    }
    if let Some(v) = memory_after(line, "Estimated CUDA graph memory:")? {
        r.cuda_graph_gib.get_or_insert(v);
    }
    if let Some(v) = memory_after(line, "Available KV cache memory:")? {
        r.available_kv_gib.get_or_insert(v);
        if let Some(rank) = worker_rank(line) {
            r.available_kv_by_rank.push((rank, v));
        }
    }
    if let Some(v) = kv_tokens_after(line)? {
        r.kv_tokens.get_or_insert(v);
    }
    if let Some(c) = concurrency_after(line)? {
        r.concurrency.get_or_insert(c);
    }
    Ok(())
}

/// Whether `line` is a pasted `vllm serve ... \` command that goes on on the next line.
fn continues(line: &str) -> bool {
    line.contains("vllm serve ") && line.trim_end().ends_with('\\')
}

/// The log's lines, a pasted `vllm serve` command joined with its `\` continuation lines so
/// that the flags given on those are read too.
fn logical_lines(text: &str) -> Vec<Cow<'_, str>> {
    let mut out: Vec<Cow<str>> = Vec::new();
    for line in text.lines() {
        match out.last_mut() {
            Some(last) if continues(last) => {
                let head = last.trim_end().trim_end_matches('\\');
                let joined = format!("{head} {line}");
                *last = Cow::Owned(joined);
            }
            _ => out.push(Cow::Borrowed(line)),
        }
    }
    out
}

/// Parses a vLLM server log. Refuses a log with nothing recognisable, an SGLang log, a
/// V0-engine log, and a recognised line or setting whose value vLLM could not have printed
/// or run with, each in one line saying so.
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
    for line in logical_lines(text) {
        let line = line.as_ref();
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
            read_args_line(line, &mut r)?;
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
            read_serve_line(&line[at + "vllm serve ".len()..], &mut r)?;
        }
        if line.contains("Chunked prefill is enabled with") {
            let mnbt = line_setting(line, "max_num_batched_tokens=", "max_num_batched_tokens")?;
            r.max_num_batched_tokens = r.max_num_batched_tokens.or(mnbt);
        }
        let len = line_setting(line, "Using max model len ", "max_model_len")?;
        r.max_model_len = r.max_model_len.or(len);
        read_figures(line, &mut r)?;
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

/// vLLM's kv_cache_dtype values, for messages.
const VLLM_KV_DTYPES: &str = "one of vLLM's kv_cache_dtype values (auto, bfloat16, float16, half, fp8, fp8_e4m3, fp8_e5m2, fp8_inc, fp8_ds_mla)";

/// kvbench's cache dtype for one of vLLM's kv_cache_dtype values ("auto" = the model's
/// dtype, sized as bf16); None for a value vLLM does not take.
fn kvbench_cache_dtype(vllm: &str) -> Option<&'static str> {
    Some(match vllm {
        "auto" | "bfloat16" => "bf16",
        "float16" | "half" => "f16",
        "fp8" | "fp8_e4m3" => "fp8-e4m3",
        // Intel Gaudi's and DeepSeek MLA's fp8 caches: one byte per element, like e4m3.
        "fp8_inc" | "fp8_ds_mla" => "fp8-e4m3",
        "fp8_e5m2" => "fp8-e5m2",
        _ => return None,
    })
}

/// The kvbench cache dtype name for vLLM's `kv_cache_dtype` (None = "auto"); an error
/// naming a value vLLM does not take.
pub fn cache_dtype_name(kv_cache_dtype: Option<&str>) -> Result<&'static str, PlanError> {
    let name = kv_cache_dtype.unwrap_or("auto");
    kvbench_cache_dtype(name).ok_or_else(|| {
        PlanError::VllmLog(format!(
            "kv_cache_dtype '{}' is not {VLLM_KV_DTYPES}",
            shown(name)
        ))
    })
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

    /// The one-line error `parse` gives for `log`.
    fn refusal(log: &str) -> String {
        let e = parse(log).unwrap_err().to_string();
        assert!(!e.contains('\n'), "not one line: {e}");
        e
    }

    #[test]
    fn figures_that_cannot_be_read_are_refused_naming_the_line() {
        for (line, names, says) in [
            // Each of these was read as another figure, or dropped, before.
            (
                "GPU KV cache size: 99999999999999999999999 tokens",
                "'GPU KV cache size' line",
                "does not fit",
            ),
            (
                "GPU KV cache size: ,,, tokens",
                "'GPU KV cache size' line",
                "is not a count",
            ),
            (
                "GPU KV cache size: 1,00 tokens",
                "'GPU KV cache size' line",
                "is not a count",
            ),
            (
                "GPU KV cache size: 4.5 tokens",
                "'GPU KV cache size' line",
                "is not a count",
            ),
            (
                "GPU KV cache size: -5 tokens",
                "'GPU KV cache size' line",
                "is negative",
            ),
            (
                "GPU KV cache size: 42,656 blocks",
                "'GPU KV cache size' line",
                "'tokens'",
            ),
            (
                "Available KV cache memory: 6.51 ZiB",
                "'Available KV cache memory' line",
                "unit 'ZiB'",
            ),
            (
                "Available KV cache memory: 6.51",
                "'Available KV cache memory' line",
                "no unit",
            ),
            (
                "Available KV cache memory: -5 GiB",
                "'Available KV cache memory' line",
                "is negative",
            ),
            (
                "Available KV cache memory: nan GiB",
                "'Available KV cache memory' line",
                "'nan' is not a decimal",
            ),
            (
                "Available KV cache memory: inf GiB",
                "'Available KV cache memory' line",
                "'inf' is not a decimal",
            ),
            (
                "Available KV cache memory: 99999999999 GiB",
                "'Available KV cache memory' line",
                "16 EiB",
            ),
            (
                "Model loading took 1e30 GiB and 5 seconds",
                "'Model loading took' line",
                "'1e30' is not a decimal",
            ),
            (
                "Model loading took 1.2.3 GiB",
                "'Model loading took' line",
                "is not a decimal",
            ),
            (
                "Estimated CUDA graph memory: GiB total",
                "'Estimated CUDA graph memory' line",
                "'GiB' is not a decimal",
            ),
            (
                "Maximum concurrency for 99999999999999 tokens per request: 1.30x",
                "'Maximum concurrency for' line",
                "more than 4294967295",
            ),
            (
                "Maximum concurrency for 32,768 tokens per request: 1e308x",
                "'Maximum concurrency for' line",
                "'1e308x'",
            ),
            (
                "Maximum concurrency for 32,768 tokens per request: 1.30",
                "'Maximum concurrency for' line",
                "does not end in 'x'",
            ),
            (
                "Maximum concurrency for 32,768 tokens per request: nanx",
                "'Maximum concurrency for' line",
                "is not a decimal",
            ),
            (
                "Maximum concurrency for 0 tokens per request: 1.30x",
                "'Maximum concurrency for' line",
                "not a positive",
            ),
            (
                "Maximum concurrency for 32,768 tokens: 1.30x",
                "'Maximum concurrency for' line",
                "tokens per request: Xx",
            ),
        ] {
            let e = refusal(line);
            assert!(e.contains(names) && e.contains(says), "{line}: {e}");
            assert!(e.contains("give the log as vLLM printed it"), "{e}");
        }
    }

    #[test]
    fn a_huge_figure_is_refused_and_quoted_in_part() {
        // 20 million digits: read as inf before ("inf GiB", a NaN% difference).
        let digits = "9".repeat(20_000_000);
        let e = refusal(&format!("Model loading took {digits} GiB"));
        assert!(
            e.contains("too large") && e.len() < 300,
            "{}",
            &e[..300.min(e.len())]
        );
        let e = refusal(&format!("GPU KV cache size: {digits} tokens"));
        assert!(
            e.contains("'9999999999") && e.contains('…') && e.len() < 300,
            "{e}"
        );
    }

    #[test]
    fn figures_in_vllms_forms_and_units_are_read() {
        let log = "Model loading took 14.2474 GiB and 558.868858 seconds\n\
Estimated CUDA graph memory: 512 MiB total\n\
Available KV cache memory: 1 TiB\n\
GPU KV cache size: 1,234,567 tokens\n\
Maximum concurrency for 131072 tokens per request: 788.86x\n";
        let r = parse(log).unwrap();
        assert_eq!(r.weights_gib, Some(14.2474));
        assert_eq!(r.cuda_graph_gib, Some(0.5));
        assert_eq!(r.available_kv_gib, Some(1024.0));
        assert_eq!(r.kv_tokens, Some(1_234_567));
        assert_eq!(r.concurrency, Some((131_072, 788.86)));
        assert_eq!(r.max_model_len, Some(131_072));
        let r = parse("Available KV cache memory: 16 GB\nGPU KV cache size: 0 tokens").unwrap();
        assert_eq!(r.available_kv_gib, Some(16e9 / GIB));
        assert_eq!(r.kv_tokens, Some(0));
    }

    #[test]
    fn serve_line_settings_are_read_in_both_forms() {
        let r = parse("$ vllm serve Qwen/Qwen3-8B --max-model-len=8192 -tp=2 --pipeline-parallel-size 2 --kv-cache-dtype=fp8_e5m2 --max-num-seqs 64 --max-num-batched-tokens=4096 --gpu-memory-utilization=0.5\n").unwrap();
        assert_eq!(r.model.as_deref(), Some("Qwen/Qwen3-8B"));
        assert_eq!(
            (r.max_model_len, r.tp, r.pp),
            (Some(8192), Some(2), Some(2))
        );
        assert_eq!(r.kv_cache_dtype.as_deref(), Some("fp8_e5m2"));
        assert_eq!(
            (r.max_num_seqs, r.max_num_batched_tokens),
            (Some(64), Some(4096))
        );
        assert_eq!(r.gpu_memory_utilization, Some(0.5));
        let r = parse("vllm serve m --max-model-len 8192 --tensor-parallel-size 4 --gpu-memory-utilization 1\n").unwrap();
        assert_eq!(
            (r.max_model_len, r.tp, r.gpu_memory_utilization),
            (Some(8192), Some(4), Some(1.0))
        );
        // A command pasted over several lines, each ended by a backslash.
        let r = parse("vllm serve deepseek-ai/DeepSeek-V2-Lite \\\n  --max-model-len=1024 --enforce-eager \\\n  --tensor-parallel-size=2 --pipeline-parallel-size=2 \nGPU KV cache size: 16 tokens\n").unwrap();
        assert_eq!(
            (r.max_model_len, r.tp, r.pp),
            (Some(1024), Some(2), Some(2))
        );
        assert_eq!(r.enforce_eager, Some(true));
    }

    #[test]
    fn serve_line_settings_vllm_refuses_are_refused() {
        for (flags, names) in [
            (
                "--tensor-parallel-size 99999999999999999999",
                "--tensor-parallel-size = '99999999999999999999'",
            ),
            ("--tensor-parallel-size -2", "--tensor-parallel-size = '-2'"),
            ("-tp abc", "--tensor-parallel-size = 'abc'"),
            ("--tensor-parallel-size 0", "--tensor-parallel-size = '0'"),
            (
                "--pipeline-parallel-size=0",
                "--pipeline-parallel-size = '0'",
            ),
            ("--max-model-len -5", "--max-model-len = '-5'"),
            ("--max-model-len abc", "--max-model-len = 'abc'"),
            ("--max-model-len 1k", "--max-model-len = '1k'"),
            ("--max-model-len=0", "--max-model-len = '0'"),
            ("--max-model-len", "--max-model-len = ''"),
            ("--max-num-seqs 0", "--max-num-seqs = '0'"),
            (
                "--max-num-batched-tokens=2.5",
                "--max-num-batched-tokens = '2.5'",
            ),
            ("--gpu-memory-utilization 1.5", "a fraction in (0, 1]"),
            ("--gpu-memory-utilization=0", "a fraction in (0, 1]"),
            ("--gpu-memory-utilization nan", "a fraction in (0, 1]"),
            ("--kv-cache-dtype=fp4", "--kv-cache-dtype = 'fp4'"),
        ] {
            let e = refusal(&format!(
                "vllm serve m {flags}\nGPU KV cache size: 16 tokens\n"
            ));
            assert!(e.contains(names), "{flags}: {e}");
            assert!(e.contains("the log's `vllm serve` line"), "{e}");
        }
    }

    #[test]
    fn args_settings_vllm_refuses_are_refused() {
        let args = |dict: &str| {
            format!("INFO [utils.py:250] non-default args: {{'model': 'Qwen/Qwen3-14B', {dict}}}\n")
        };
        for (dict, says) in [
            (
                "'max_num_batched_tokens': 0",
                "max_num_batched_tokens = '0'",
            ),
            ("'max_num_seqs': 0", "max_num_seqs = '0'"),
            (
                "'tensor_parallel_size': 2.5",
                "tensor_parallel_size = '2.5'",
            ),
            (
                "'tensor_parallel_size': 99999999999",
                "tensor_parallel_size = '99999999999'",
            ),
            ("'max_model_len': 0", "max_model_len = '0'"),
            (
                "'gpu_memory_utilization': 1.5",
                "gpu_memory_utilization = '1.5'",
            ),
            ("'kv_cache_dtype': 'foo'", "kv_cache_dtype = 'foo'"),
        ] {
            let e = refusal(&args(dict));
            assert!(
                e.contains(says) && e.contains("the log's non-default args"),
                "{dict}: {e}"
            );
        }
        let e = refusal("INFO Initializing a V1 LLM engine (v0.8.5) with config: model='Qwen/Qwen3-30B-A3B', max_seq_len=0, tensor_parallel_size=4");
        assert!(
            e.contains("max_seq_len = '0' in the log's engine config line"),
            "{e}"
        );
        // Python's None is "not set"; keys kvbench does not read stay ignored.
        let r = parse(&args(
            "'max_num_seqs': None, 'port': 'abc', 'max_num_batched_tokens': 16384",
        ))
        .unwrap();
        assert_eq!(
            (r.max_num_seqs, r.max_num_batched_tokens),
            (None, Some(16384))
        );
    }

    #[test]
    fn settings_on_lines_of_their_own_are_checked() {
        let r = parse("INFO Chunked prefill is enabled with max_num_batched_tokens=2048.\nINFO Using max model len 4096\nGPU KV cache size: 16 tokens").unwrap();
        assert_eq!(
            (r.max_num_batched_tokens, r.max_model_len),
            (Some(2048), Some(4096))
        );
        let e = refusal("INFO Chunked prefill is enabled with max_num_batched_tokens=0.");
        assert!(
            e.contains("max_num_batched_tokens = '0' in the log's 'max_num_batched_tokens' line"),
            "{e}"
        );
        let e = refusal("INFO Using max model len -1");
        assert!(e.contains("max_model_len = '-1'"), "{e}");
    }

    #[test]
    fn kv_cache_dtypes_are_vllms() {
        for (vllm, kvbench) in [
            ("auto", "bf16"),
            ("bfloat16", "bf16"),
            ("float16", "f16"),
            ("half", "f16"),
            ("fp8", "fp8-e4m3"),
            ("fp8_e4m3", "fp8-e4m3"),
            ("fp8_e5m2", "fp8-e5m2"),
            ("fp8_inc", "fp8-e4m3"),
            ("fp8_ds_mla", "fp8-e4m3"),
        ] {
            assert_eq!(cache_dtype_name(Some(vllm)).unwrap(), kvbench);
            let log = format!("non-default args: {{'model': 'm', 'kv_cache_dtype': '{vllm}'}}");
            assert_eq!(parse(&log).unwrap().kv_cache_dtype.as_deref(), Some(vllm));
        }
        assert_eq!(cache_dtype_name(None).unwrap(), "bf16");
        // Sized as f16 before.
        let e = cache_dtype_name(Some("foo")).unwrap_err().to_string();
        assert!(
            e.contains("kv_cache_dtype 'foo'") && e.contains("fp8_e5m2"),
            "{e}"
        );
    }
}
