//! Proof of Attribution on every served call: the completion is attributed with its adapter's
//! datanet index (span matching, issue [4]) and the response carries an `attribution` object; the
//! committed top-k and root go into the call's receipt.
//!
//! What is attributed, so anyone holding the index can recompute it (`openledger attribution
//! verify RECEIPT --prompt P --response R`): the prompt is the last user message (chat) or the
//! prompt (completions); the response is the choices' texts joined by a blank line.

use alloy_primitives::B256;
use openledger_attribution::{attribute, commitment, Index, Params};
use openledger_model::Tokenizer;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Contributions committed on chain per receipt (the heaviest ones; the rest under the root).
pub const COMMIT_TOP: usize = 8;
/// Open indexes kept at once.
const MAX_OPEN: usize = 16;
/// Evidence rows listed per contribution in a response.
const SPANS_PER_CONTRIBUTION: usize = 4;

/// Open attribution indexes by directory.
#[derive(Default)]
pub struct Indexes {
    open: Mutex<HashMap<PathBuf, Arc<Index>>>,
}

/// A call's attribution: the response's `attribution` object and the receipt's commitment.
pub struct CallAttribution {
    pub json: Value,
    pub top: Vec<(u64, u32)>,
    pub root: B256,
}

impl Indexes {
    fn get(&self, dir: &Path) -> Result<Arc<Index>, String> {
        let mut g = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ix) = g.get(dir) {
            return Ok(ix.clone());
        }
        let ix = Arc::new(
            Index::open(dir)
                .map_err(|e| format!("opening the attribution index {}: {e}", dir.display()))?,
        );
        if g.len() >= MAX_OPEN {
            g.clear();
        }
        g.insert(dir.to_path_buf(), ix.clone());
        Ok(ix)
    }

    /// Attributes `response` (with `prompt`) with the index in `dir` (blocking: span search).
    pub fn attribute(
        &self,
        dir: &Path,
        tok: &Tokenizer,
        prompt: &str,
        response: &str,
    ) -> Result<CallAttribution, String> {
        let ix = self.get(dir)?;
        let enc = |t: &str| tok.encode_plain(t).map_err(|e| e.to_string());
        let (p, r) = (enc(prompt)?, enc(response)?);
        let a = attribute(&ix, &p, &r, &Params::default());
        let c = commitment::commit(&a, COMMIT_TOP);
        let top: Vec<(u64, u32)> = c
            .top
            .iter()
            .map(|w| (w.contribution_id, w.weight_ppm))
            .collect();
        let contributions: Vec<Value> = a
            .contributions
            .iter()
            .take(COMMIT_TOP)
            .map(|cw| {
                let spans: Vec<Value> = a
                    .spans
                    .iter()
                    .filter(|s| s.rows.iter().any(|row| row.contribution_id == cw.contribution_id))
                    .take(SPANS_PER_CONTRIBUTION)
                    .map(|s| {
                        json!({
                            "text": tok.decode(&s.tokens, true).unwrap_or_default(),
                            "start_token": s.start, "end_token": s.end, "count": s.count,
                        })
                    })
                    .collect();
                json!({
                    "contribution_id": cw.contribution_id,
                    "contributor": cw.contributor.to_string(),
                    "weight": cw.weight,
                    "weight_ppm": (cw.weight.clamp(0.0, 1.0) * commitment::PPM as f64).floor() as u32,
                    "spans": spans,
                })
            })
            .collect();
        let json = json!({
            "index_root": ix.root().to_string(),
            "response_tokens": a.response_tokens,
            "coverage": a.coverage,
            "unattributed": (1.0 - a.coverage).max(0.0),
            "contributions": contributions,
            "committed_top": top.iter().map(|(id, ppm)| json!({"contribution_id": id, "weight_ppm": ppm})).collect::<Vec<_>>(),
            "root": c.root.to_string(),
            "list_len": c.len,
        });
        Ok(CallAttribution {
            json,
            top,
            root: c.root,
        })
    }
}
