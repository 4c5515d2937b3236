//! Shared by the serving tests: SmolLM2 served once per test binary, adapters built to make one chosen
//! token overwhelmingly likely, and small HTTP helpers that drive the router in-process.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use candle_core::{DType, Tensor};
use openledger_model::{peft, Device, Llama, LoraAdapter, LoraConfig, LoraPair, Target};
use openledger_serve::{Serve, ServeConfig};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

/// `OPENLEDGER_MODEL`, else `models/<default>` at the workspace root (installed by scripts/fetch-model).
pub fn model_path() -> PathBuf {
    if let Ok(p) = std::env::var("OPENLEDGER_MODEL") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(openledger_model::DEFAULT_MODEL_FILE);
    assert!(
        p.exists(),
        "{} is missing: run ./scripts/fetch-model first",
        p.display()
    );
    p
}

/// The server every test of this binary shares (its engine thread outlives each test's runtime).
pub fn serve() -> Arc<Serve> {
    static S: OnceLock<Arc<Serve>> = OnceLock::new();
    S.get_or_init(|| {
        Serve::open(
            &model_path(),
            Device::Cpu,
            ServeConfig {
                allow_runtime_lora: true,
                ..ServeConfig::default()
            },
        )
        .expect("load SmolLM2")
    })
    .clone()
}

/// A token `t` that wins the argmax when the final hidden state points along its own output row.
pub fn pushable_token(model: &Llama, from: u32) -> u32 {
    let w = model.lm_head.to_float(&Device::Cpu).unwrap();
    let g = model.norm.to_dtype(DType::F32).unwrap();
    let vocab = w.dims2().unwrap().0 as u32;
    for t in from..vocab {
        let row = w.get(t as usize).unwrap();
        let scores = w
            .matmul(&(row * &g).unwrap().unsqueeze(1).unwrap())
            .unwrap()
            .squeeze(1)
            .unwrap();
        let best = scores.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        if best == t {
            return t;
        }
    }
    panic!("no token from {from} on wins its own direction")
}

/// A rank-8 adapter on the last layer's MLP that adds a large, always positive multiple of token
/// `t`'s output row to the residual stream, so `t` becomes overwhelmingly likely at every position.
/// Gate and up both get `c·(a_i·x)` on a pair of hidden units with opposite signs, so one of the two
/// `silu(g)·u` products is `≈ c²(a_i·x)²` whatever the sign; down maps those units onto `t`'s row.
pub fn token_adapter(model: &Llama, t: u32, seed: u64) -> LoraAdapter {
    use rand::{Rng, SeedableRng};
    let r = 8;
    let dev = Device::Cpu;
    let layer = model.config.num_layers - 1;
    let (hidden_mlp, hidden) = model.target_dims(Target::Gate);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let a: Vec<f32> = (0..r * hidden)
        .map(|_| rng.gen_range(-1.0f32..1.0) / (hidden as f32).sqrt())
        .collect();
    let c = 30.0f32;
    // B for gate/up: column i puts +c on unit 2i and -c on unit 2i+1.
    let mut b_in = vec![0f32; hidden_mlp * r];
    for i in 0..r {
        b_in[(2 * i) * r + i] = c;
        b_in[(2 * i + 1) * r + i] = -c;
    }
    // Down: A's first row sums the 2r units, B's first column is t's row.
    let mut a_down = vec![0f32; r * hidden_mlp];
    a_down[..2 * r].fill(1.0);
    let row: Vec<f32> = model
        .lm_head
        .to_float(&dev)
        .unwrap()
        .get(t as usize)
        .unwrap()
        .to_vec1()
        .unwrap();
    let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mut b_down = vec![0f32; hidden * r];
    for (j, x) in row.iter().enumerate() {
        b_down[j * r] = 50.0 * x / norm;
    }
    let cfg = LoraConfig::new(r, r as f64, &[Target::Gate, Target::Up, Target::Down]);
    let mut ad = LoraAdapter::empty(cfg);
    let pair = |a: &[f32], ad: (usize, usize), b: &[f32], bd: (usize, usize)| LoraPair {
        a: Tensor::from_vec(a.to_vec(), ad, &dev).unwrap(),
        b: Tensor::from_vec(b.to_vec(), bd, &dev).unwrap(),
    };
    for tgt in [Target::Gate, Target::Up] {
        ad.insert(layer, tgt, pair(&a, (r, hidden), &b_in, (hidden_mlp, r)))
            .unwrap();
    }
    ad.insert(
        layer,
        Target::Down,
        pair(&a_down, (r, hidden_mlp), &b_down, (hidden, r)),
    )
    .unwrap();
    model.check_adapter(&ad).unwrap();
    ad
}

/// Writes a token adapter as a PEFT directory and registers it through `POST /v1/load_lora_adapter`.
pub async fn install_token_adapter(name: &str, t: u32, seed: u64) -> tempfile::TempDir {
    let s = serve();
    let dir = tempfile::tempdir().unwrap();
    peft::save(&token_adapter(s.engine.model(), t, seed), dir.path()).unwrap();
    let (status, text) = post_raw(
        "/v1/load_lora_adapter",
        serde_json::json!({"lora_name": name, "lora_path": dir.path()}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    dir
}

pub async fn send(req: Request<Body>) -> axum::response::Response {
    openledger_serve::router(serve())
        .oneshot(req)
        .await
        .unwrap()
}

pub async fn post_raw(path: &str, body: Value) -> (StatusCode, String) {
    let resp = send(
        Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await;
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

pub async fn post(path: &str, body: Value) -> (StatusCode, Value) {
    let (status, text) = post_raw(path, body).await;
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, v)
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(|s| s.trim().to_string())
        .collect()
}
