//! Runs a fine-tuning job from a TOML config (until the CLI's `openledger factory train` lands):
//!
//! ```sh
//! cargo run --release -p openledger-factory --example train -- CONFIG.toml JOB_DIR
//! cargo run --release -p openledger-factory --example train -- --resume JOB_DIR
//! cargo run --release -p openledger-factory --example train -- --draw JOB_DIR   # redraw loss.png/svg
//! ```
//!
//! Ctrl-C is not caught: a killed run resumes from its last checkpoint.

use openledger_factory::{Job, TerminalProgress, TrainConfig};
use std::path::Path;
use std::sync::atomic::AtomicBool;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, dir] = args.as_slice() {
        if flag == "--draw" {
            let dir = Path::new(dir);
            let drawn = openledger_factory::plot::Curves::from_log(&dir.join("log.jsonl"))
                .and_then(|c| {
                    openledger_factory::plot::draw(&c, &dir.join("loss.png"), &dir.join("loss.svg"))
                });
            if let Err(e) = drawn {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
            return;
        }
    }
    let job = match args.as_slice() {
        [flag, dir] if flag == "--resume" => Job::resume(Path::new(dir)),
        [config, dir] => TrainConfig::from_toml_file(Path::new(config))
            .and_then(|c| Job::prepare(c, Path::new(dir))),
        _ => {
            eprintln!("usage: train CONFIG.toml JOB_DIR | train --resume JOB_DIR");
            std::process::exit(2);
        }
    };
    if let Some(rss) = openledger_factory::metrics::peak_rss_bytes() {
        eprintln!("peak RSS after loading: {} MiB", rss >> 20);
    }
    let result = job.and_then(|mut j| j.run(&TerminalProgress::new(), &AtomicBool::new(false)));
    match result {
        Ok(out) => println!(
            "{}",
            serde_json::to_string_pretty(&out.metrics).expect("serializes")
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
