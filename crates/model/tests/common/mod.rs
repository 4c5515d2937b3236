//! Shared by the SmolLM2 integration tests: the default model, loaded once per test binary.

use openledger_model::{load, Llama, Tokenizer};
use std::path::PathBuf;
use std::sync::OnceLock;

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

pub fn model() -> &'static (Llama, Tokenizer) {
    static M: OnceLock<(Llama, Tokenizer)> = OnceLock::new();
    M.get_or_init(|| {
        let p = model_path();
        (
            load::load(&p, &openledger_model::Device::Cpu).unwrap(),
            Tokenizer::for_model(&p).unwrap(),
        )
    })
}
