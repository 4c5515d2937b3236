//! Writes the deterministic adapter the PEFT round-trip test expects (`ours_adapter/`), in PEFT format,
//! for the tiny Llama of the test data. scripts/make-peft-references then loads it with Python peft.

use openledger_model::{peft, Device, LoraAdapter, LoraConfig, Target};

/// The tiny test model's projection shapes (out, in): hidden 64, kv 2×16, intermediate 128.
pub fn tiny_dims(t: Target) -> (usize, usize) {
    match t {
        Target::Q | Target::O => (64, 64),
        Target::K | Target::V => (32, 64),
        Target::Gate | Target::Up => (128, 64),
        Target::Down => (64, 128),
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: write_peft_adapter <dir>");
    let mut cfg = LoraConfig::new(
        6,
        12.0,
        &[Target::Q, Target::K, Target::O, Target::Up, Target::Down],
    );
    cfg.use_rslora = true;
    cfg.base_model = Some("tiny_llama".into());
    let adapter =
        LoraAdapter::init(cfg, &tiny_dims, 2, 7, true, &Device::Cpu).expect("init adapter");
    peft::save(&adapter, std::path::Path::new(&dir)).expect("save adapter");
    println!("wrote {dir} ({} parameters)", adapter.num_params());
}
