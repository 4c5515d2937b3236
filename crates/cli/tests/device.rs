//! `--device`: asking for CUDA from a build without it fails at once, saying how to build with it;
//! `--device cpu` runs the model on the CPU.

use std::path::PathBuf;
use std::process::{Command, Output};

fn openledger(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_openledger"))
        .args(args)
        .env_remove("OPENLEDGER_DEVICE")
        .env_remove("OPENLEDGER_MODEL")
        .output()
        .expect("running openledger")
}

/// `generate` and `chat` refuse `--device cuda` in a CPU-only build with the fix in the message, and
/// nothing is generated.
#[cfg(not(feature = "cuda"))]
#[test]
fn device_cuda_on_a_cpu_build_fails_saying_how_to_build_with_cuda() {
    for args in [
        &["generate", "--device", "cuda", "--max-tokens", "1", "Hello"][..],
        &["chat", "--device", "cuda"][..],
    ] {
        let out = openledger(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {err}");
        assert!(err.contains("no CUDA support"), "{args:?}: {err}");
        assert!(err.contains("--features cuda"), "{args:?}: {err}");
        assert!(err.contains("--device cpu"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed output");
    }
}

/// An unknown device is refused by the argument parser, listing the choices.
#[test]
fn an_unknown_device_is_refused_with_the_choices() {
    let out = openledger(&["generate", "--device", "tpu", "Hello"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("tpu") && err.contains("cpu") && err.contains("cuda"),
        "{err}"
    );
}

/// `--device cpu` loads the model on the CPU and generates (needs models/ from scripts/fetch-model).
#[test]
fn device_cpu_generates_on_the_cpu() {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(openledger_model::DEFAULT_MODEL_PATH);
    assert!(
        model.exists(),
        "{} is missing: run ./scripts/fetch-model first",
        model.display()
    );
    let model = model.to_str().expect("a UTF-8 path");
    let out = openledger(&[
        "generate",
        "--device",
        "cpu",
        "--model",
        model,
        "--max-tokens",
        "3",
        "The sea is",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(" on cpu in "), "{err}");
    assert!(err.contains("3 generated"), "{err}");
}
