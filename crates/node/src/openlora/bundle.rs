//! The adapter bundle: a PEFT adapter directory as ONE file, so one BLAKE3 hash (the on-chain
//! `adapterHash`) covers weights and configuration together.
//!
//! Format (`openledger_bundle` = `1`): a safetensors file (8-byte little-endian header length,
//! JSON header, tensor data) holding the tensors of `adapter_model.safetensors`, whose
//! `__metadata__` carries
//!
//! | key | value |
//! |---|---|
//! | `format` | `pt` (as PEFT writes it) |
//! | `openledger_bundle` | `1` |
//! | `peft_config` | the text of `adapter_config.json`, byte for byte |
//! | `training_config` | the text of `training_config.json`, when the directory has one |
//!
//! Packing is canonical: the header lists `__metadata__` first and then the tensors ordered by
//! their dtype's size (largest first, so every tensor stays aligned) and name, with their data
//! laid out in that order and no gaps; the header is padded with spaces to a multiple of 8
//! bytes. The same directory always packs to the same bytes.
//!
//! Because a bundle is itself a valid safetensors file of the adapter's tensors (extra metadata
//! is allowed), unpacking writes `adapter_config.json` from `peft_config` and uses the bundle's
//! bytes unchanged as `adapter_model.safetensors`: the unpacked weights file hashes to the
//! on-chain `adapterHash` too.

use alloy_primitives::B256;
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Write},
    path::Path,
};

/// `adapter_config.json`, PEFT's configuration file.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// `adapter_model.safetensors`, PEFT's weights file.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The optional training configuration carried along.
pub const TRAINING_CONFIG_FILE: &str = "training_config.json";
/// Metadata key naming the bundle format version.
pub const FORMAT_KEY: &str = "openledger_bundle";
/// The format version written and read.
pub const FORMAT_VERSION: &str = "1";
/// Metadata key holding `adapter_config.json`.
pub const PEFT_CONFIG_KEY: &str = "peft_config";
/// Metadata key holding `training_config.json`.
pub const TRAINING_CONFIG_KEY: &str = "training_config";
/// Largest safetensors header read (the safetensors crate's own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// Largest configuration file packed.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Most tensors one bundle holds.
pub const MAX_TENSORS: usize = 100_000;

/// BLAKE3 of `bytes`, as the chain records content hashes.
pub fn blake3_hash(bytes: &[u8]) -> B256 {
    B256::from(*blake3::hash(bytes).as_bytes())
}

/// One tensor of a safetensors header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Start and end of its bytes within the data section.
    pub start: u64,
    pub end: u64,
}

/// A parsed and checked safetensors header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// `__metadata__` (empty when absent).
    pub metadata: BTreeMap<String, String>,
    /// Tensors in data order.
    pub tensors: Vec<TensorEntry>,
    /// Where the data section starts in the file (8 + header length).
    pub data_start: u64,
}

/// The bytes per element of a safetensors dtype; `None` for one this reader does not know.
pub fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

#[derive(Serialize, Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// Reads and checks the header of a safetensors file of `file_len` bytes from `r` (positioned
/// at its start): every tensor has a known dtype, its byte range matches its shape, and the
/// ranges tile the data section exactly, which must end where the file ends.
pub fn read_header(r: &mut impl Read, file_len: u64) -> Result<Header, String> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len)
        .map_err(|e| format!("not a safetensors file (no header length): {e}"))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER_BYTES || n.saturating_add(8) > file_len {
        return Err(format!(
            "not a safetensors file: header length {n} in a file of {file_len} bytes"
        ));
    }
    let mut text = vec![0u8; n as usize];
    r.read_exact(&mut text)
        .map_err(|e| format!("reading the safetensors header: {e}"))?;
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&text)
        .map_err(|e| format!("the safetensors header is not a JSON object: {e}"))?;
    let data_start = 8 + n;
    let data_len = file_len - data_start;
    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::new();
    for (name, v) in raw {
        if name == "__metadata__" {
            metadata = serde_json::from_value(v)
                .map_err(|e| format!("__metadata__ is not a map of strings: {e}"))?;
            continue;
        }
        if tensors.len() == MAX_TENSORS {
            return Err(format!("more than {MAX_TENSORS} tensors"));
        }
        let t: RawTensor =
            serde_json::from_value(v).map_err(|e| format!("tensor {name:?}: {e}"))?;
        let size = dtype_size(&t.dtype)
            .ok_or_else(|| format!("tensor {name:?} has dtype {:?}, unknown here", t.dtype))?;
        let bytes = t
            .shape
            .iter()
            .try_fold(size, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("tensor {name:?}: shape {:?} overflows", t.shape))?;
        let [start, end] = t.data_offsets;
        if end < start || end - start != bytes {
            return Err(format!(
                "tensor {name:?}: {} bytes at {start}..{end} for shape {:?} of {}",
                end.wrapping_sub(start),
                t.shape,
                t.dtype
            ));
        }
        tensors.push(TensorEntry {
            name,
            dtype: t.dtype,
            shape: t.shape,
            start,
            end,
        });
    }
    tensors.sort_by_key(|t| (t.start, t.end));
    let mut at = 0u64;
    for t in &tensors {
        if t.start != at {
            return Err(format!(
                "tensor {:?} starts at {} but the previous data ends at {at} (overlap or gap)",
                t.name, t.start
            ));
        }
        at = t.end;
    }
    if at != data_len {
        return Err(format!(
            "the tensors cover {at} bytes of data, the file holds {data_len}"
        ));
    }
    Ok(Header {
        metadata,
        tensors,
        data_start,
    })
}

/// Packs `adapter_config.json` text, the bytes of `adapter_model.safetensors` and, if any, the
/// training configuration text into a canonical bundle (see the module documentation).
pub fn pack_parts(
    config_json: &str,
    weights: &[u8],
    training_config: Option<&str>,
) -> Result<Vec<u8>, String> {
    let check_json = |what: &str, text: &str| -> Result<(), String> {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(_)) => Ok(()),
            Ok(_) => Err(format!("{what} is not a JSON object")),
            Err(e) => Err(format!("{what} is not JSON: {e}")),
        }
    };
    check_json(CONFIG_FILE, config_json)?;
    if let Some(t) = training_config {
        check_json(TRAINING_CONFIG_FILE, t)?;
    }
    let header = read_header(&mut &weights[..], weights.len() as u64)
        .map_err(|e| format!("{WEIGHTS_FILE}: {e}"))?;
    if header.tensors.is_empty() {
        return Err(format!("{WEIGHTS_FILE} holds no tensors"));
    }
    let data = &weights[header.data_start as usize..];
    let mut order = header.tensors.clone();
    order.sort_by(|a, b| {
        let size = |t: &TensorEntry| dtype_size(&t.dtype).unwrap_or(1);
        size(b).cmp(&size(a)).then_with(|| a.name.cmp(&b.name))
    });
    let mut metadata = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        (FORMAT_KEY.to_string(), FORMAT_VERSION.to_string()),
        (PEFT_CONFIG_KEY.to_string(), config_json.to_string()),
    ]);
    if let Some(t) = training_config {
        metadata.insert(TRAINING_CONFIG_KEY.to_string(), t.to_string());
    }
    let mut text = format!("{{\"__metadata__\":{}", json(&metadata));
    let mut body = Vec::with_capacity(data.len());
    for t in &order {
        let start = body.len() as u64;
        body.extend_from_slice(&data[t.start as usize..t.end as usize]);
        let raw = RawTensor {
            dtype: t.dtype.clone(),
            shape: t.shape.clone(),
            data_offsets: [start, body.len() as u64],
        };
        text.push(',');
        text.push_str(&json(t.name.as_str()));
        text.push(':');
        text.push_str(&json(&raw));
    }
    text.push('}');
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + body.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// One part of a header as JSON (structs keep their field order, maps are sorted).
fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("strings, numbers and maps serialise")
}

/// A packed adapter directory.
#[derive(Clone, Debug)]
pub struct Packed {
    /// The bundle's bytes.
    pub bytes: Vec<u8>,
    /// Their BLAKE3: the `adapterHash` to register.
    pub hash: B256,
    /// BLAKE3 of `training_config.json` if the directory has one, else of
    /// `adapter_config.json`: the `trainingConfigHash` to register.
    pub config_hash: B256,
}

fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let f = fs::File::open(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(format!("{} is over {max} bytes", path.display()));
    }
    Ok(bytes)
}

fn text(path: &Path) -> Result<String, String> {
    String::from_utf8(read_limited(path, MAX_CONFIG_BYTES)?)
        .map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

/// Packs the PEFT directory `dir` (`adapter_config.json`, `adapter_model.safetensors`, and
/// `training_config.json` if present), holding at most `max_bytes` of weights.
pub fn pack_dir(dir: &Path, max_bytes: u64) -> Result<Packed, String> {
    let config = text(&dir.join(CONFIG_FILE))?;
    let training = dir.join(TRAINING_CONFIG_FILE);
    let training = if training.exists() {
        Some(text(&training)?)
    } else {
        None
    };
    let weights = read_limited(&dir.join(WEIGHTS_FILE), max_bytes)?;
    let bytes = pack_parts(&config, &weights, training.as_deref())
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(Packed {
        hash: blake3_hash(&bytes),
        config_hash: blake3_hash(training.as_deref().unwrap_or(&config).as_bytes()),
        bytes,
    })
}

/// Reads a bundle's header and returns its `adapter_config.json` text and training
/// configuration, refusing a file that is not a bundle of this format.
pub fn read_bundle(path: &Path) -> Result<(String, Option<String>), String> {
    let mut f = fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let len = f
        .metadata()
        .map_err(|e| format!("reading {}: {e}", path.display()))?
        .len();
    let mut header = read_header(&mut std::io::BufReader::new(&mut f), len)?;
    match header.metadata.get(FORMAT_KEY).map(String::as_str) {
        Some(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(format!(
                "an adapter bundle of format {v}, this node reads format {FORMAT_VERSION}: upgrade the node"
            ))
        }
        None => {
            return Err(format!(
                "not an adapter bundle (no {FORMAT_KEY} in its metadata): publish adapters with `openledger model publish-adapter`"
            ))
        }
    }
    let config = header
        .metadata
        .remove(PEFT_CONFIG_KEY)
        .ok_or_else(|| format!("the bundle carries no {PEFT_CONFIG_KEY}"))?;
    Ok((config, header.metadata.remove(TRAINING_CONFIG_KEY)))
}

/// Unpacks the bundle at `bundle` into the directory `out` (created): `adapter_config.json`,
/// `adapter_model.safetensors` (a copy of the bundle) and `training_config.json` when the bundle carries one. Returns the config text.
pub fn unpack(bundle: &Path, out: &Path) -> Result<String, String> {
    let (config, training) = read_bundle(bundle)?;
    fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let write = |name: &str, text: &str| -> Result<(), String> {
        let p = out.join(name);
        let mut f = fs::File::create(&p).map_err(|e| format!("writing {}: {e}", p.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| format!("writing {}: {e}", p.display()))
    };
    write(CONFIG_FILE, &config)?;
    if let Some(t) = &training {
        write(TRAINING_CONFIG_FILE, t)?;
    }
    // A copy, not a hard link: whatever writes into the unpacked directory cannot damage the
    // stored bundle.
    let weights = out.join(WEIGHTS_FILE);
    fs::copy(bundle, &weights)
        .and_then(|_| fs::File::open(&weights)?.sync_all())
        .map_err(|e| format!("copying the weights to {}: {e}", weights.display()))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file of `tensors` (name, dtype, shape, bytes), laid out in the given order.
    pub(crate) fn safetensors(tensors: &[(&str, &str, Vec<u64>, Vec<u8>)]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            let start = data.len();
            data.extend_from_slice(bytes);
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        let text = serde_json::to_vec(&header).unwrap();
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&text);
        out.extend_from_slice(&data);
        out
    }

    fn sample(order_ab: bool) -> Vec<u8> {
        let a = ("x.lora_A.weight", "F32", vec![2, 3], vec![1u8; 24]);
        let b = ("x.lora_B.weight", "F16", vec![3, 2], vec![2u8; 12]);
        if order_ab {
            safetensors(&[a, b])
        } else {
            safetensors(&[b, a])
        }
    }

    #[test]
    fn packing_is_canonical_and_unpacks_to_the_same_tensors() {
        let config = r#"{"r": 2, "target_modules": ["q_proj"]}"#;
        let one = pack_parts(config, &sample(true), None).unwrap();
        let two = pack_parts(config, &sample(false), None).unwrap();
        assert_eq!(one, two, "the tensors' order in the source does not matter");
        let h = read_header(&mut &one[..], one.len() as u64).unwrap();
        assert_eq!(h.data_start % 8, 0);
        assert_eq!(h.metadata[PEFT_CONFIG_KEY], config);
        assert_eq!(h.metadata[FORMAT_KEY], FORMAT_VERSION);
        // F32 first (larger dtype), then F16; each tensor's bytes kept.
        assert_eq!(h.tensors[0].name, "x.lora_A.weight");
        let data = &one[h.data_start as usize..];
        assert_eq!(&data[..24], &[1u8; 24]);
        assert_eq!(&data[24..], &[2u8; 12]);
        // Another config is another bundle.
        let other = pack_parts(r#"{"r": 4}"#, &sample(true), None).unwrap();
        assert_ne!(blake3_hash(&one), blake3_hash(&other));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle");
        fs::write(&path, &one).unwrap();
        let out = dir.path().join("peft");
        unpack(&path, &out).unwrap();
        assert_eq!(fs::read_to_string(out.join(CONFIG_FILE)).unwrap(), config);
        assert_eq!(fs::read(out.join(WEIGHTS_FILE)).unwrap(), one);
        assert!(!out.join(TRAINING_CONFIG_FILE).exists());
    }

    #[test]
    fn malformed_weights_and_non_bundles_are_refused() {
        let good = sample(true);
        let config = r#"{"r": 2}"#;
        let mut short = good.clone();
        short.pop();
        assert!(pack_parts(config, &short, None)
            .unwrap_err()
            .contains("cover"));
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(pack_parts(config, &huge, None)
            .unwrap_err()
            .contains("header length"));
        let bad_dtype = safetensors(&[("t", "Q4", vec![2], vec![0; 2])]);
        assert!(pack_parts(config, &bad_dtype, None)
            .unwrap_err()
            .contains("unknown"));
        let wrong_size = safetensors(&[("t", "F32", vec![2], vec![0; 7])]);
        assert!(pack_parts(config, &wrong_size, None)
            .unwrap_err()
            .contains("for shape"));
        assert!(pack_parts("[1]", &good, None)
            .unwrap_err()
            .contains("not a JSON object"));
        // A plain safetensors file is not a bundle.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain");
        fs::write(&path, &good).unwrap();
        assert!(read_bundle(&path)
            .unwrap_err()
            .contains("not an adapter bundle"));
    }
}
