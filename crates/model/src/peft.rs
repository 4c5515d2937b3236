//! PEFT adapter files: `adapter_config.json` + `adapter_model.safetensors` with PEFT's tensor names
//! (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`), read and written, so adapters
//! move both ways between this runtime and Hugging Face PEFT.

use crate::error::{ModelError, Result};
use crate::lora::{LoraAdapter, LoraConfig, LoraPair, Target};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use std::collections::HashMap;
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
pub fn load(dir: &Path, device: &Device) -> Result<LoraAdapter> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
    let config = parse_config(&text, &cfg_path)?;
    let w_path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&w_path).map_err(|e| ModelError::io(&w_path, e))?;
    from_parts(config, &bytes, &w_path, device)
}

/// Builds an adapter from a config and the bytes of its safetensors file (uploads arrive this way).
pub fn from_parts(
    config: LoraConfig,
    safetensors_bytes: &[u8],
    origin: &Path,
    device: &Device,
) -> Result<LoraAdapter> {
    let bad = |m: String| ModelError::Adapter(format!("{}: {m}", origin.display()));
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load_buffer(safetensors_bytes, device)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
    let mut pairs: HashMap<(usize, Target), (Option<Tensor>, Option<Tensor>)> = HashMap::new();
    for (name, t) in tensors {
        let Some((layer, target, ab)) = parse_key(&name) else {
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
        if t.rank() != 2 {
            return Err(bad(format!(
                "tensor {name:?} is {:?}; LoRA weights are matrices",
                t.dims()
            )));
        }
        let t = t.to_dtype(DType::F32)?;
        let e = pairs.entry((layer, target)).or_default();
        let slot = if ab == 'A' { &mut e.0 } else { &mut e.1 };
        if slot.replace(t).is_some() {
            return Err(bad(format!(
                "the file holds layer {layer} {} lora_{ab} twice (last seen as {name:?})",
                target.peft_name()
            )));
        }
    }
    if pairs.is_empty() {
        return Err(bad("the file holds no LoRA weights".into()));
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
    Ok(adapter)
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
