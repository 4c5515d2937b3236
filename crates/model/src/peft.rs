//! PEFT adapter files: `adapter_config.json` + `adapter_model.safetensors` with PEFT's tensor names
//! (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`), read and written, so adapters
//! move both ways between this runtime and Hugging Face PEFT.

use crate::error::{ModelError, Result};
use crate::lora::{LoraAdapter, LoraConfig, LoraPair, Target};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The largest rank an adapter may declare.
pub const MAX_RANK: usize = 4096;
/// The largest `lora_alpha` (real adapters use 8 to a few hundred).
pub const MAX_ALPHA: f64 = 65536.0;

fn key(layer: usize, t: Target, ab: &str) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{}.lora_{ab}.weight",
        t.parent(),
        t.peft_name()
    )
}

/// Parses a PEFT `adapter_config.json` (LoRA only), refusing options this runtime would get wrong.
pub fn parse_config(text: &str, origin: &Path) -> Result<LoraConfig> {
    let bad = |m: String| ModelError::Adapter(format!("{}: {m}", origin.display()));
    let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let peft_type = v["peft_type"].as_str().unwrap_or("LORA");
    if peft_type != "LORA" {
        return Err(bad(format!(
            "peft_type {peft_type:?} is not supported (only LORA)"
        )));
    }
    let r = v["r"]
        .as_u64()
        .filter(|&r| (1..=MAX_RANK as u64).contains(&r))
        .ok_or_else(|| {
            bad(format!(
                "missing or invalid \"r\" ({}): the rank must be an integer between 1 and {MAX_RANK}",
                v["r"]
            ))
        })? as usize;
    // PEFT's defaults: lora_alpha 8, no rsLoRA, no dropout.
    let alpha = match &v["lora_alpha"] {
        Value::Null => 8.0,
        a => a
            .as_f64()
            .filter(|a| a.is_finite() && *a > 0.0 && *a <= MAX_ALPHA)
            .ok_or_else(|| {
                bad(format!(
                    "lora_alpha is {a}; it must be a number above 0 and at most {MAX_ALPHA}"
                ))
            })?,
    };
    let use_rslora = match &v["use_rslora"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        other => {
            return Err(bad(format!(
                "use_rslora is {other}; it must be true or false"
            )))
        }
    };
    let dropout = match &v["lora_dropout"] {
        Value::Null => 0.0,
        d => d
            .as_f64()
            .filter(|d| (0.0..1.0).contains(d))
            .ok_or_else(|| bad(format!("lora_dropout is {d}; it must be in [0, 1)")))?,
    };
    if v["use_dora"].as_bool() == Some(true) {
        return Err(bad("DoRA adapters (use_dora) are not supported".into()));
    }
    if v["fan_in_fan_out"].as_bool() == Some(true) {
        return Err(bad(
            "fan_in_fan_out adapters (GPT-2 Conv1D) are not supported".into(),
        ));
    }
    if v["bias"].as_str().is_some_and(|b| b != "none") {
        return Err(bad(format!(
            "bias {:?} is not supported (only \"none\")",
            v["bias"]
        )));
    }
    for k in ["lora_bias", "use_qalora"] {
        if v[k].as_bool() == Some(true) {
            return Err(bad(format!("{k} is not supported")));
        }
    }
    for k in [
        "modules_to_save",
        "layer_replication",
        "trainable_token_indices",
    ] {
        if !v[k].is_null() {
            return Err(bad(format!(
                "{k} is not supported (the adapter would carry more than LoRA weights)"
            )));
        }
    }
    for k in ["rank_pattern", "alpha_pattern"] {
        if v[k].as_object().is_some_and(|o| !o.is_empty()) {
            return Err(bad(format!("{k} (per-module ranks) is not supported")));
        }
    }
    let names: Vec<String> = match &v["target_modules"] {
        Value::Array(a) if a.is_empty() => {
            return Err(bad("target_modules lists no modules".into()))
        }
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str().map(str::to_string).ok_or_else(|| {
                    bad(format!(
                        "target_modules holds {x}, which is not a module name"
                    ))
                })
            })
            .collect::<Result<_>>()?,
        Value::String(s) => {
            return Err(bad(format!(
                "target_modules as a regex ({s:?}) is not supported; list the modules"
            )))
        }
        _ => return Err(bad("missing target_modules".into())),
    };
    let mut targets = Vec::new();
    for n in &names {
        let t = Target::parse(n).ok_or_else(|| {
            bad(format!(
                "target module {n:?} is not a Llama projection (q/k/v/o/gate/up/down_proj)"
            ))
        })?;
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    targets.sort();
    Ok(LoraConfig {
        r,
        alpha,
        use_rslora,
        targets,
        dropout,
        base_model: v["base_model_name_or_path"].as_str().map(str::to_string),
    })
}

/// Reads a PEFT adapter directory.
///
/// An f32 weights file (what PEFT and [`save`] write) is read in one pass into the one buffer the
/// adapter keeps (no copy of the whole file first); any other file goes through [`from_parts`].
pub fn load(dir: &Path, device: &Device) -> Result<LoraAdapter> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
    let config = parse_config(&text, &cfg_path)?;
    let w_path = dir.join(WEIGHTS_FILE);
    let mut file = std::fs::File::open(&w_path).map_err(|e| ModelError::io(&w_path, e))?;
    let io = |e| ModelError::io(&w_path, e);
    if let Some((tensors, data_len)) = f32_layout(&mut file).map_err(io)? {
        let bad = |m: String| ModelError::Adapter(format!("{}: {m}", w_path.display()));
        let entries = plan(
            &config,
            tensors
                .iter()
                .map(|(n, shape, begin)| (n.as_str(), shape.as_slice(), begin / 4)),
            &bad,
        )?;
        let values = read_f32s(&mut file, data_len / 4).map_err(io)?;
        return assemble(config, entries, values, device, &bad);
    }
    let mut bytes = Vec::new();
    std::io::Seek::rewind(&mut file).map_err(io)?;
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(io)?;
    from_parts(config, &bytes, &w_path, device)
}

/// Reads a PEFT adapter directory for serving on the CPU: the adapter keeps only the copy packed
/// for the kernels, in the process default [`crate::lora::KernelPrecision`], and its tensors are
/// views of it ([`LoraAdapter::tensors_are_packed`]). An f32 weights file is streamed tensor by
/// tensor through a small buffer straight into the packed copy, so a load writes 4.9 MB of fresh
/// memory for a rank-8 all-linear SmolLM2 adapter where [`load`] writes 14.7 (f32 tensors and the
/// packed copy); on a cold load that writing is most of the time. Serving computes the same bits
/// from either. Other files go through [`load`] and keep their f32 tensors.
pub fn load_packed(dir: &Path) -> Result<LoraAdapter> {
    load_packed_as(dir, crate::lora::default_kernel_precision())
}

/// [`load_packed`] in a given precision (f32 anyway for a weight beyond f16's range).
pub fn load_packed_as(dir: &Path, precision: crate::lora::KernelPrecision) -> Result<LoraAdapter> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
    let config = parse_config(&text, &cfg_path)?;
    let w_path = dir.join(WEIGHTS_FILE);
    let mut file = std::fs::File::open(&w_path).map_err(|e| ModelError::io(&w_path, e))?;
    let io = |e| ModelError::io(&w_path, e);
    let Some((tensors, _)) = f32_layout(&mut file).map_err(io)? else {
        let adapter = load(dir, &Device::Cpu)?;
        adapter.prepare_as(precision);
        return Ok(adapter);
    };
    let bad = |m: String| ModelError::Adapter(format!("{}: {m}", w_path.display()));
    let mut entries = plan(
        &config,
        tensors
            .iter()
            .map(|(n, shape, begin)| (n.as_str(), shape.as_slice(), begin / 4)),
        &bad,
    )?;
    // Slots in (layer, target) order, as `LoraAdapter::prepare` lays them out.
    let mut pairs: BTreeMap<(usize, Target), [Option<&Entry>; 2]> = BTreeMap::new();
    for e in &entries {
        pairs.entry((e.layer, e.target)).or_default()[usize::from(!e.is_a)] = Some(e);
    }
    let mut layout = crate::lora_kernel::Layout::default();
    let mut slots = HashMap::new();
    for (&(layer, t), ab) in &pairs {
        let [Some(a), Some(b)] = ab else {
            return Err(bad(format!(
                "layer {layer} {} has only one of lora_A / lora_B",
                t.peft_name()
            )));
        };
        if a.rows != config.r || b.cols != config.r {
            return Err(bad(format!(
                "layer {layer} {}: A has rank {} and B rank {}, config says r={}",
                t.peft_name(),
                a.rows,
                b.cols,
                config.r
            )));
        }
        let slot = layout
            .push(layer, t, config.r, a.cols, b.rows)
            .ok_or_else(|| bad(format!("layer {layer} {} is too large", t.peft_name())))?;
        slots.insert((layer, t), slot);
    }
    // The data section holds the tensors back to back (checked by `f32_layout`): read in order.
    entries.sort_by_key(|e| e.at);
    let start = std::io::Seek::stream_position(&mut file).map_err(io)?;
    let scale = config.scale() as f32;
    if precision == crate::lora::KernelPrecision::F16 {
        if let Some(d) =
            stream_packed::<half::f16>(&mut file, &entries, &slots, &layout).map_err(io)?
        {
            let packed = crate::lora_kernel::Packed::new(d, layout, scale)?;
            return LoraAdapter::from_packed(config, packed).map_err(|e| bad(e.to_string()));
        }
        // A weight beyond f16's range: f32, as `LoraAdapter::prepare` does.
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start)).map_err(io)?;
    }
    let d = stream_packed::<f32>(&mut file, &entries, &slots, &layout)
        .map_err(io)?
        .ok_or_else(|| bad("a weight is not a finite f32".into()))?;
    let packed = crate::lora_kernel::Packed::new(d, layout, scale)?;
    LoraAdapter::from_packed(config, packed).map_err(|e| bad(e.to_string()))
}

/// Reads `entries` (sorted by offset, tiling the data section from the file's position) one at a
/// time through a buffer the size of the largest, packing each into its slot. `None` when a value
/// does not fit `E`.
fn stream_packed<E: crate::lora_kernel::Elem>(
    file: &mut std::fs::File,
    entries: &[Entry],
    slots: &HashMap<(usize, Target), crate::lora_kernel::Slot>,
    layout: &crate::lora_kernel::Layout,
) -> std::io::Result<Option<Vec<E>>> {
    // The next cold load's buffer is faulted in off its path (after this one is read).
    let mut data = crate::big_buffer::take_filled(layout.total(), E::default());
    let largest = entries.iter().map(|e| e.rows * e.cols).max().unwrap_or(0);
    let mut bytes = vec![0u8; largest * 4];
    let mut values = vec![0f32; largest];
    for e in entries {
        let n = e.rows * e.cols;
        std::io::Read::read_exact(file, &mut bytes[..n * 4])?;
        for (v, c) in values[..n].iter_mut().zip(bytes.chunks_exact(4)) {
            *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        let slot = &slots[&(e.layer, e.target)];
        let fits = if e.is_a {
            crate::lora_kernel::pack_a(&mut data, slot, &values[..n])
        } else {
            crate::lora_kernel::pack_b(&mut data, slot, &values[..n])
        };
        if !fits {
            return Ok(None);
        }
    }
    crate::big_buffer::refill_later(layout.total(), E::default());
    Ok(Some(data))
}

/// The header of a safetensors file whose tensors are all f32 and tile its data section in
/// 4-byte-aligned pieces: each tensor's name, shape and byte offset in
/// the data section, and the section's length; the file is left at the section's start. `None` for
/// anything else (other dtypes, gaps, a malformed header: [`from_parts`] then explains what is wrong).
#[allow(clippy::type_complexity)]
fn f32_layout(
    file: &mut std::fs::File,
) -> std::io::Result<Option<(Vec<(String, Vec<usize>, usize)>, usize)>> {
    use std::io::Read;
    const MAX_HEADER: u64 = 100_000_000; // safetensors' own bound
    let file_len = file.metadata()?.len();
    let mut n = [0u8; 8];
    if file_len < 8 || file.read_exact(&mut n).is_err() {
        return Ok(None);
    }
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER || n > file_len - 8 {
        return Ok(None);
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)?;
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&header) else {
        return Ok(None);
    };
    let Ok(data_len) = usize::try_from(file_len - 8 - n) else {
        return Ok(None);
    };
    let mut tensors = Vec::with_capacity(map.len());
    let mut spans = Vec::with_capacity(map.len());
    for (name, info) in map {
        if name == "__metadata__" {
            continue;
        }
        let (Some("F32"), Some(shape), Some(offsets)) = (
            info["dtype"].as_str(),
            info["shape"].as_array(),
            info["data_offsets"].as_array(),
        ) else {
            return Ok(None);
        };
        let shape: Option<Vec<usize>> = shape
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect();
        let offsets: Option<Vec<usize>> = offsets
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect();
        let (Some(shape), Some(&[begin, end])) = (shape, offsets.as_deref()) else {
            return Ok(None);
        };
        let bytes = shape.iter().try_fold(4usize, |acc, &d| acc.checked_mul(d));
        if bytes != end.checked_sub(begin) || begin % 4 != 0 {
            return Ok(None);
        }
        spans.push((begin, end));
        tensors.push((name, shape, begin));
    }
    spans.sort_unstable();
    let mut at = 0;
    for (begin, end) in spans {
        if begin != at {
            return Ok(None);
        }
        at = end;
    }
    Ok((at == data_len && data_len % 4 == 0).then_some((tensors, data_len)))
}

/// The next `4·n` bytes of `file` as little-endian f32, read through a small buffer so the large
/// one is written once (not zero-filled first: on a cold load, touching fresh memory is most of the
/// cost).
fn read_f32s(file: &mut std::fs::File, n: usize) -> std::io::Result<Vec<f32>> {
    let mut values = crate::big_buffer::with_capacity(n);
    let mut buf = vec![0u8; 1 << 18];
    let mut left = n * 4;
    while left > 0 {
        let chunk = &mut buf[..left.min(1 << 18)];
        std::io::Read::read_exact(file, chunk)?;
        left -= chunk.len();
        values.extend(
            chunk
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
    Ok(values)
}

/// Builds an adapter from a config and the bytes of its safetensors file (uploads arrive this way).
/// F32, F16, BF16 and F64 weights are converted once to f32, into one buffer for the whole adapter.
pub fn from_parts(
    config: LoraConfig,
    safetensors_bytes: &[u8],
    origin: &Path,
    device: &Device,
) -> Result<LoraAdapter> {
    let bad = |m: String| ModelError::Adapter(format!("{}: {m}", origin.display()));
    let file = safetensors::SafeTensors::deserialize(safetensors_bytes)
        .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
    let views: Vec<(&str, safetensors::tensor::TensorView)> = file.iter().collect();
    let mut at = 0usize;
    let mut offsets = Vec::with_capacity(views.len());
    for (_, v) in &views {
        offsets.push(at);
        // Bounded by the file: each view's elements are at least one byte each.
        at += v.shape().iter().product::<usize>();
    }
    let entries = plan(
        &config,
        views
            .iter()
            .zip(&offsets)
            .map(|((name, v), &at)| (*name, v.shape(), at)),
        &bad,
    )?;
    let mut values = vec![0f32; at];
    for ((name, v), &off) in views.iter().zip(&offsets) {
        let len = v.shape().iter().product::<usize>();
        decode(v.dtype(), v.data(), &mut values[off..off + len])
            .map_err(|m| bad(format!("tensor {name:?}: {m}")))?;
    }
    assemble(config, entries, values, device, &bad)
}

/// One LoRA matrix of the file: which pair it belongs to, its shape, and where its values start in
/// the adapter's buffer.
struct Entry {
    layer: usize,
    target: Target,
    is_a: bool,
    rows: usize,
    cols: usize,
    at: usize,
}

/// Checks every tensor's name, target, layer and shape against the config: `(name, shape, offset)`.
fn plan<'n>(
    config: &LoraConfig,
    tensors: impl Iterator<Item = (&'n str, &'n [usize], usize)>,
    bad: &dyn Fn(String) -> ModelError,
) -> Result<Vec<Entry>> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (name, shape, at) in tensors {
        let Some((layer, target, ab)) = parse_key(name) else {
            return Err(bad(format!(
                "unexpected tensor {name:?} (not a LoRA A/B weight of a Llama projection)"
            )));
        };
        if !config.targets.contains(&target) {
            return Err(bad(format!(
                "tensor {name:?} targets {} which target_modules does not list",
                target.peft_name()
            )));
        }
        if layer >= crate::config::limits::MAX_LAYERS {
            return Err(bad(format!(
                "tensor {name:?} is for layer {layer}; no model has more than {} layers",
                crate::config::limits::MAX_LAYERS
            )));
        }
        let &[rows, cols] = shape else {
            return Err(bad(format!(
                "tensor {name:?} is {shape:?}; LoRA weights are matrices"
            )));
        };
        if !seen.insert((layer, target, ab)) {
            return Err(bad(format!(
                "the file holds layer {layer} {} lora_{ab} twice (last seen as {name:?})",
                target.peft_name()
            )));
        }
        entries.push(Entry {
            layer,
            target,
            is_a: ab == 'A',
            rows,
            cols,
            at,
        });
    }
    if entries.is_empty() {
        return Err(bad("the file holds no LoRA weights".into()));
    }
    Ok(entries)
}

/// The adapter over `values` (every matrix at its entry's offset, row-major as in the file): every
/// matrix is a view of one shared tensor (no further copy), and the adapter is packed for the CPU
/// kernels at once ([`LoraAdapter::prepare`]) so its first request does not pay for it.
fn assemble(
    config: LoraConfig,
    entries: Vec<Entry>,
    values: Vec<f32>,
    device: &Device,
    bad: &dyn Fn(String) -> ModelError,
) -> Result<LoraAdapter> {
    let total = values.len();
    let span = |e: &Entry| {
        e.rows
            .checked_mul(e.cols)
            .filter(|len| e.at.checked_add(*len).is_some_and(|end| end <= total))
            .ok_or_else(|| {
                bad(format!(
                    "layer {} {} lies outside the file",
                    e.layer,
                    e.target.peft_name()
                ))
            })
    };
    let all = Tensor::from_vec(values, total, &Device::Cpu)?;
    let mut pairs: HashMap<(usize, Target), (Option<Tensor>, Option<Tensor>)> = HashMap::new();
    for e in &entries {
        let flat = all.narrow(0, e.at, span(e)?)?;
        let t = flat.reshape((e.rows, e.cols))?;
        let t = if device.is_cpu() {
            t
        } else {
            t.to_device(device)?
        };
        let slot = pairs.entry((e.layer, e.target)).or_default();
        if e.is_a {
            slot.0 = Some(t);
        } else {
            slot.1 = Some(t);
        }
    }
    let mut adapter = LoraAdapter::empty(config);
    let mut keys: Vec<_> = pairs.keys().copied().collect();
    keys.sort();
    for k in keys {
        let (a, b) = pairs.remove(&k).expect("key from the map");
        let (Some(a), Some(b)) = (a, b) else {
            return Err(bad(format!(
                "layer {} {} has only one of lora_A / lora_B",
                k.0,
                k.1.peft_name()
            )));
        };
        adapter
            .insert(k.0, k.1, LoraPair { a, b })
            .map_err(|e| bad(e.to_string()))?;
    }
    if device.is_cpu() {
        adapter.prepare();
    }
    Ok(adapter)
}

/// Converts a tensor's little-endian bytes into `out` (as many values as `out` holds). Float types
/// only: integer LoRA weights are refused.
fn decode(
    dtype: safetensors::Dtype,
    bytes: &[u8],
    out: &mut [f32],
) -> std::result::Result<(), String> {
    use safetensors::Dtype;
    fn convert<const W: usize>(bytes: &[u8], out: &mut [f32], f: impl Fn([u8; W]) -> f32) {
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(W)) {
            *o = f(c.try_into().expect("W bytes"));
        }
    }
    match dtype {
        Dtype::F32 => convert::<4>(bytes, out, f32::from_le_bytes),
        Dtype::F16 => convert::<2>(bytes, out, |b| half::f16::from_le_bytes(b).to_f32()),
        Dtype::BF16 => convert::<2>(bytes, out, |b| half::bf16::from_le_bytes(b).to_f32()),
        Dtype::F64 => convert::<8>(bytes, out, |b| f64::from_le_bytes(b) as f32),
        other => {
            return Err(format!(
                "dtype {other:?} is not a float type (F32, F16, BF16, F64)"
            ))
        }
    }
    Ok(())
}

/// `(layer, target, 'A'|'B')` from a PEFT tensor name (with or without an adapter name segment).
fn parse_key(name: &str) -> Option<(usize, Target, char)> {
    let rest = name.split("layers.").nth(1)?;
    let mut parts = rest.split('.');
    let layer = parts.next()?.parse().ok()?;
    let _parent = parts.next()?;
    let target = Target::parse(parts.next()?)?;
    let ab = match parts.next()? {
        "lora_A" => 'A',
        "lora_B" => 'B',
        _ => return None,
    };
    let tail: Vec<&str> = parts.collect();
    (tail == ["weight"] || (tail.len() == 2 && tail[1] == "weight")).then_some((layer, target, ab))
}

/// The `adapter_config.json` PEFT writes for this adapter.
pub fn config_json(config: &LoraConfig) -> Value {
    let mut names: Vec<&str> = config.targets.iter().map(|t| t.peft_name()).collect();
    names.sort();
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": config.base_model,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": names,
        "use_rslora": config.use_rslora,
        "use_dora": false,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": null,
    })
}

/// Serializes the weights as PEFT's `adapter_model.safetensors` bytes (f32).
pub fn weights_bytes(adapter: &LoraAdapter) -> Result<Vec<u8>> {
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (layer, t, pair) in adapter.pairs() {
        named.push((
            key(layer, t, "A"),
            pair.a.to_dtype(DType::F32)?.contiguous()?,
        ));
        named.push((
            key(layer, t, "B"),
            pair.b.to_dtype(DType::F32)?.contiguous()?,
        ));
    }
    let views: Vec<(String, Vec<u8>, Vec<usize>)> = named
        .iter()
        .map(|(n, t)| {
            let data: Vec<f32> = t.flatten_all()?.to_vec1()?;
            let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            Ok((n.clone(), bytes, t.dims().to_vec()))
        })
        .collect::<Result<_>>()?;
    let tensors: Vec<(String, safetensors::tensor::TensorView)> = views
        .iter()
        .map(|(n, b, s)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| ModelError::Adapter(format!("serializing: {e}")))?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::tensor::serialize(tensors, Some(meta))
        .map_err(|e| ModelError::Adapter(format!("serializing: {e}")))
}

/// Writes a PEFT adapter directory (created if needed). Files are written to temporaries and renamed,
/// so a crash never leaves a half-written adapter.
pub fn save(adapter: &LoraAdapter, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let config =
        serde_json::to_string_pretty(&config_json(&adapter.config)).expect("json value serializes");
    let weights = weights_bytes(adapter)?;
    for (name, bytes) in [
        (WEIGHTS_FILE, weights.as_slice()),
        (CONFIG_FILE, config.as_bytes()),
    ] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).map_err(|e| ModelError::io(&tmp, e))?;
        std::fs::rename(&tmp, dir.join(name)).map_err(|e| ModelError::io(dir.join(name), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_with_and_without_adapter_name() {
        assert_eq!(
            parse_key("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"),
            Some((3, Target::Q, 'A'))
        );
        assert_eq!(
            parse_key("base_model.model.model.layers.0.mlp.down_proj.lora_B.default.weight"),
            Some((0, Target::Down, 'B'))
        );
        assert_eq!(parse_key("base_model.model.lm_head.weight"), None);
    }

    #[test]
    fn save_then_load_round_trips() {
        let dev = Device::Cpu;
        let mut cfg = LoraConfig::new(4, 8.0, &[Target::Q, Target::Down]);
        cfg.use_rslora = true;
        let dims = |t: Target| {
            if t == Target::Down {
                (32, 64)
            } else {
                (32, 32)
            }
        };
        let a = LoraAdapter::init(cfg, &dims, 2, 1, true, &dev).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save(&a, dir.path()).unwrap();
        let b = load(dir.path(), &dev).unwrap();
        // Every config field, every (layer, target), and both matrices of each pair, bit for bit.
        assert_eq!(a.config, b.config);
        assert!(a.config.use_rslora && a.config.targets.len() == 2);
        assert_eq!(a.num_params(), b.num_params());
        let (pa, pb): (Vec<_>, Vec<_>) = (a.pairs().collect(), b.pairs().collect());
        assert_eq!(pa.len(), 4, "2 layers x 2 targets written");
        assert_eq!(pa.len(), pb.len());
        for ((l1, t1, p1), (l2, t2, p2)) in pa.iter().zip(&pb) {
            assert_eq!((l1, t1), (l2, t2));
            for (which, x, y) in [("A", &p1.a, &p2.a), ("B", &p1.b, &p2.b)] {
                assert_eq!(x.dims(), y.dims(), "layer {l1} {t1:?} {which}");
                let (x, y): (Vec<f32>, Vec<f32>) = (
                    x.flatten_all().unwrap().to_vec1().unwrap(),
                    y.flatten_all().unwrap().to_vec1().unwrap(),
                );
                assert!(!x.is_empty());
                let same = x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(same, "layer {l1} {t1:?} {which} changed in the round trip");
            }
        }
    }

    #[test]
    fn unsupported_configs_are_refused_with_reasons() {
        let p = Path::new("adapter_config.json");
        for (text, why) in [
            (
                r#"{"r":8,"target_modules":["q_proj"],"use_dora":true}"#,
                "DoRA",
            ),
            (r#"{"r":8,"target_modules":"q_proj|v_proj"}"#, "regex"),
            (r#"{"r":8,"target_modules":["c_attn"]}"#, "c_attn"),
            (r#"{"r":0,"target_modules":["q_proj"]}"#, "\"r\""),
            (r#"{"peft_type":"IA3","r":8}"#, "IA3"),
            ("not json", "JSON"),
        ] {
            let err = parse_config(text, p).unwrap_err().to_string();
            assert!(err.contains(why), "{err} should mention {why}");
        }
    }

    #[test]
    fn malformed_weights_are_refused() {
        let cfg = LoraConfig::new(4, 8.0, &[Target::Q]);
        assert!(from_parts(cfg.clone(), b"garbage", Path::new("x"), &Device::Cpu).is_err());
    }
}
