//! Reading a safetensors header handed over as bytes: the 8-byte little-endian length, then
//! that many bytes of JSON naming each tensor's dtype, shape and byte range. Tensor data is
//! never needed: the byte ranges are exactly what a loader allocates.
//! (Format: https://github.com/huggingface/safetensors#format.)

use serde::Serialize;
use serde_json::Value;

use crate::error::PlanError;

/// Largest header accepted: the safetensors reference implementation refuses headers above
/// 100 MB (`MAX_HEADER_SIZE`), and no real checkpoint shard comes near it.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor of a shard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorEntry {
    pub name: String,
    /// The safetensors dtype name, e.g. `BF16`, `F8_E4M3`, `I32`, `U8`.
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Bytes of its data (end - begin of `data_offsets`).
    pub bytes: u64,
}

/// The header of one shard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Header {
    pub tensors: Vec<TensorEntry>,
}

fn bad(file: &str, what: impl std::fmt::Display) -> PlanError {
    PlanError::Safetensors {
        file: file.to_string(),
        reason: what.to_string(),
    }
}

/// Bytes of one element of a safetensors dtype (F4 packs two per byte: 0.5).
pub fn element_bytes(dtype: &str) -> Option<f64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8.0,
        "F32" | "I32" | "U32" => 4.0,
        "F16" | "BF16" | "I16" | "U16" => 2.0,
        "F8_E4M3" | "F8_E5M2" | "F8_E8M0" | "I8" | "U8" | "BOOL" => 1.0,
        "F4" | "F4_E2M1" => 0.5,
        _ => return None,
    })
}

/// The JSON length from a shard's first 8 bytes; `file` names the shard in errors. Refuses
/// a length over [`MAX_HEADER_BYTES`] or beyond the file's size.
pub fn header_len(first8: &[u8], file_size: u64, file: &str) -> Result<u64, PlanError> {
    let Ok(prefix) = <[u8; 8]>::try_from(first8.get(..8).unwrap_or(&[])) else {
        return Err(bad(
            file,
            format!(
                "truncated: {} bytes, a safetensors file starts with an 8-byte header length",
                first8.len()
            ),
        ));
    };
    let n = u64::from_le_bytes(prefix);
    // "version " is how a Git LFS pointer file begins: the weights were never fetched.
    if &prefix == b"version " {
        return Err(bad(
            file,
            "a Git LFS pointer, not the weights: fetch them (git lfs pull) or size by --weights-dtype".to_string(),
        ));
    }
    if n > MAX_HEADER_BYTES {
        return Err(bad(
            file,
            format!("header of {n} bytes exceeds the {MAX_HEADER_BYTES}-byte limit of the format; the file is corrupt or not safetensors"),
        ));
    }
    if n.saturating_add(8) > file_size {
        return Err(bad(
            file,
            format!(
                "truncated: header says {n} bytes but the file has {file_size} in all; re-download it"
            ),
        ));
    }
    Ok(n)
}

/// Parses a header: `bytes` is the file's first 8 + N bytes (or more; the rest is ignored).
pub fn parse_header(bytes: &[u8], file: &str) -> Result<Header, PlanError> {
    let n = header_len(bytes, bytes.len() as u64, file)? as usize;
    let json = &bytes[8..8 + n];
    let root: Value =
        serde_json::from_slice(json).map_err(|e| bad(file, format!("header is not JSON ({e})")))?;
    let obj = root
        .as_object()
        .ok_or_else(|| bad(file, "header is not a JSON object of tensors"))?;
    let mut tensors = Vec::with_capacity(obj.len());
    for (name, t) in obj {
        if name == "__metadata__" {
            continue;
        }
        let dtype = t
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(file, format!("tensor '{name}' has no dtype")))?;
        let shape: Vec<u64> = t
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect())
            .ok_or_else(|| bad(file, format!("tensor '{name}' has no integer shape")))?;
        let offsets: Vec<u64> = t
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect())
            .filter(|o: &Vec<u64>| o.len() == 2 && o[0] <= o[1])
            .ok_or_else(|| {
                bad(
                    file,
                    format!("tensor '{name}' has no [begin, end] data_offsets"),
                )
            })?;
        tensors.push(TensorEntry {
            name: name.clone(),
            dtype: dtype.to_string(),
            shape,
            bytes: offsets[1] - offsets[0],
        });
    }
    Ok(Header { tensors })
}

/// Shard file names listed in a `model.safetensors.index.json` (its `weight_map` values),
/// each once, sorted.
pub fn index_shards(text: &str, file: &str) -> Result<Vec<String>, PlanError> {
    let root: Value =
        serde_json::from_str(text).map_err(|e| bad(file, format!("index is not JSON ({e})")))?;
    let map = root
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad(file, "index has no weight_map object"))?;
    let mut shards: Vec<String> = map
        .values()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    shards.sort();
    shards.dedup();
    if shards.is_empty() {
        return Err(bad(file, "index weight_map names no shard"));
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header as a writer lays it out: length, JSON, then (absent here) the data.
    fn file(json: &str) -> Vec<u8> {
        let mut b = (json.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(json.as_bytes());
        b
    }

    #[test]
    fn sums_byte_ranges_per_tensor() {
        // A 4096 x 4096 BF16 weight is 33,554,432 bytes; an f32 scale of shape [32, 32] 4096.
        let h = parse_header(
            &file(
                r#"{"__metadata__":{"format":"pt"},
                "w":{"dtype":"BF16","shape":[4096,4096],"data_offsets":[0,33554432]},
                "s":{"dtype":"F32","shape":[32,32],"data_offsets":[33554432,33558528]}}"#,
            ),
            "x.safetensors",
        )
        .unwrap();
        assert_eq!(h.tensors.len(), 2);
        let total: u64 = h.tensors.iter().map(|t| t.bytes).sum();
        assert_eq!(total, 33_558_528);
        assert_eq!(element_bytes("F8_E4M3"), Some(1.0));
    }

    #[test]
    fn a_git_lfs_pointer_says_what_it_is() {
        // What `git clone` without git-lfs leaves in place of a shard.
        let pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 4\n";
        let e = header_len(pointer, pointer.len() as u64, "model.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Git LFS pointer") && e.contains("git lfs pull"),
            "{e}"
        );
    }

    #[test]
    fn bad_headers_are_one_clear_error() {
        let e = header_len(&[1, 2, 3], 3, "a.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a.safetensors") && e.contains("truncated"),
            "{e}"
        );
        let huge = (200_000_000u64).to_le_bytes();
        let e = header_len(&huge, 1 << 40, "b").unwrap_err().to_string();
        assert!(e.contains("exceeds"), "{e}");
        let e = header_len(&100u64.to_le_bytes(), 50, "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated") && e.contains("100"), "{e}");
        let e = parse_header(&file("{not json"), "d")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not JSON"), "{e}");
        let e = parse_header(&file(r#"{"w":{"dtype":"BF16","shape":[2]}}"#), "e")
            .unwrap_err()
            .to_string();
        assert!(e.contains("data_offsets"), "{e}");
    }

    #[test]
    fn index_lists_each_shard_once() {
        let s = index_shards(
            r#"{"metadata":{},"weight_map":{"a":"m-00002.safetensors","b":"m-00001.safetensors","c":"m-00001.safetensors"}}"#,
            "index",
        )
        .unwrap();
        assert_eq!(s, vec!["m-00001.safetensors", "m-00002.safetensors"]);
        assert!(index_shards("{}", "i").is_err());
    }
}
