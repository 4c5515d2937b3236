//! `openledger rlhf`: RLHF validators rate served outputs in commit-reveal rounds
//! (`contracts/IRlhf.sol`), and the decided preferences export as a dataset.
//!
//! Receipts on chain hold commitments, not text, and the node keeps no prompts or answers. So
//! the texts travel off chain: `rlhf open` takes the prompt and the answers, puts their
//! keccak-256 hashes in the round and keeps the texts in `<home>/rlhf/texts.jsonl` (hand that
//! file to the validators, who check it with `rlhf show ROUND --texts FILE`); `rlhf export`
//! joins the on-chain preferences with such files and writes only rows whose texts match the
//! hashes the validators rated. `rlhf commit` draws a random salt and keeps the rating in
//! `<home>/rlhf/ratings/` until `rlhf reveal` reveals it.

use crate::commands::{show, text_arg, Session};
use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_sol_types::SolCall;
use anyhow::{bail, Context, Result};
use openledger_types::{
    abi::IRlhf,
    modules::RLHF,
    units::{format_open, parse_open},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
};

#[derive(clap::Subcommand, Debug)]
pub enum RlhfCmd {
    /// Join the validator set (needs the governed rlhf_min_stake staked: `stake add`).
    Join,
    /// Leave the validator set.
    Leave,
    /// Open a round rating RECEIPT_A (against RECEIPT_B when given) with the texts served;
    /// the round commits to their hashes and the texts are kept in <home>/rlhf/texts.jsonl.
    Open {
        receipt_a: u64,
        receipt_b: Option<u64>,
        /// The prompt both answers reply to (text, or @FILE).
        #[arg(long)]
        prompt: String,
        /// The answer of RECEIPT_A (text, or @FILE).
        #[arg(long)]
        output_a: String,
        /// The answer of RECEIPT_B (text, or @FILE).
        #[arg(long)]
        output_b: Option<String>,
    },
    /// Commit a rating during the commit window: a score in basis points (0..=10000) and,
    /// in a pair round, which answer is better. The salt stays in <home>/rlhf/ratings/.
    Commit {
        round: u64,
        #[arg(long)]
        score: u16,
        /// a (A over B), b (B over A) or none.
        #[arg(long, default_value = "none", value_parser = parse_preference)]
        prefer: u8,
    },
    /// Reveal the rating committed in ROUND (during the reveal window).
    Reveal { round: u64 },
    /// Finalize a round after its reveal window: consensus, rewards and slashes.
    Finalize { round: u64 },
    /// Add OPEN to the validators' reward pool.
    Fund {
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Show a round and its ratings (with --texts, check the texts against its hashes), or
    /// without ROUND the validator set, the reward pool and the counts.
    Show {
        round: Option<u64>,
        /// Texts files (JSONL of {receipt, prompt, response}) to check against the round.
        #[arg(long)]
        texts: Vec<PathBuf>,
    },
    /// Write the decided preferences as JSONL: dpo rows {prompt, chosen, rejected} (the TRL
    /// preference format), or sft rows {prompt, response} of the chosen answers (what
    /// `openledger factory train` reads). Only rows whose texts match the on-chain hashes.
    Export {
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Texts files (JSONL of {receipt, prompt, response}); default <home>/rlhf/texts.jsonl.
        #[arg(long)]
        texts: Vec<PathBuf>,
        #[arg(long, default_value = "dpo", value_parser = ["dpo", "sft"])]
        format: String,
    },
}

fn parse_preference(s: &str) -> Result<u8, String> {
    match s.to_ascii_lowercase().as_str() {
        "none" | "0" => Ok(0),
        "a" | "1" => Ok(1),
        "b" | "2" => Ok(2),
        _ => Err(format!("{s:?}: expected a, b or none")),
    }
}

/// One served text: the prompt and the answer of a receipt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Text {
    pub receipt: u64,
    pub prompt: String,
    pub response: String,
}

/// A committed rating kept until it is revealed.
#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    round: u64,
    validator: Address,
    score: u16,
    preferred: u8,
    salt: B256,
}

fn dir(s: &Session) -> PathBuf {
    s.cli_home.0.join("rlhf")
}

fn kept_path(s: &Session, validator: Address, round: u64) -> PathBuf {
    dir(s)
        .join("ratings")
        .join(format!("{validator:#x}-{round}.json"))
}

/// Reads texts files; later lines win for the same receipt. A missing default file is empty.
pub fn read_texts(paths: &[PathBuf]) -> Result<HashMap<u64, Text>> {
    let mut out = HashMap::new();
    for p in paths {
        let raw =
            std::fs::read_to_string(p).with_context(|| format!("reading texts {}", p.display()))?;
        for (i, line) in raw.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let t: Text = serde_json::from_str(line).with_context(|| {
                format!(
                    "{} line {}: expected {{\"receipt\", \"prompt\", \"response\"}}",
                    p.display(),
                    i + 1
                )
            })?;
            out.insert(t.receipt, t);
        }
    }
    Ok(out)
}

fn append_texts(path: &Path, texts: &[Text]) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for t in texts {
        writeln!(f, "{}", serde_json::to_string(t)?)?;
    }
    f.sync_all()?;
    Ok(())
}

fn view<C: SolCall>(s: &Session, c: C) -> Result<C::Return> {
    let out = s.rpc()?.view(RLHF, c.abi_encode())?;
    Ok(C::abi_decode_returns(&out)?)
}

fn send<C: SolCall>(s: &Session, value: U256, c: C) -> Result<()> {
    s.call(RLHF, value, c.abi_encode())
}

/// Runs an `rlhf` subcommand.
pub fn run(s: &Session, c: RlhfCmd) -> Result<()> {
    match c {
        RlhfCmd::Join => send(s, U256::ZERO, IRlhf::joinValidatorsCall {}),
        RlhfCmd::Leave => send(s, U256::ZERO, IRlhf::leaveValidatorsCall {}),
        RlhfCmd::Open {
            receipt_a,
            receipt_b,
            prompt,
            output_a,
            output_b,
        } => {
            let prompt = text_arg(&prompt)?;
            let output_a = text_arg(&output_a)?;
            let output_b = output_b.as_deref().map(text_arg).transpose()?;
            if receipt_b.is_some() != output_b.is_some() {
                bail!("a pair round needs RECEIPT_B and --output-b together");
            }
            let mut texts = vec![Text {
                receipt: receipt_a,
                prompt: prompt.clone(),
                response: output_a.clone(),
            }];
            if let (Some(b), Some(out)) = (receipt_b, &output_b) {
                texts.push(Text {
                    receipt: b,
                    prompt: prompt.clone(),
                    response: out.clone(),
                });
            }
            send(
                s,
                U256::ZERO,
                IRlhf::openRoundCall {
                    receiptA: receipt_a,
                    receiptB: receipt_b.unwrap_or(0),
                    promptHash: keccak256(prompt.as_bytes()),
                    outputHashA: keccak256(output_a.as_bytes()),
                    outputHashB: output_b
                        .as_deref()
                        .map(|o| keccak256(o.as_bytes()))
                        .unwrap_or_default(),
                },
            )?;
            let path = dir(s).join("texts.jsonl");
            append_texts(&path, &texts)?;
            println!(
                "texts kept in {} (validators need them to rate)",
                path.display()
            );
            Ok(())
        }
        RlhfCmd::Commit {
            round,
            score,
            prefer,
        } => {
            let validator = s.signer()?.address();
            let path = kept_path(s, validator, round);
            if path.exists() {
                bail!(
                    "{} holds a rating already committed in round {round}; reveal it with `rlhf reveal {round}`",
                    path.display()
                );
            }
            let kept = Kept {
                round,
                validator,
                score,
                preferred: prefer,
                salt: B256::from(rand::random::<[u8; 32]>()),
            };
            let commitment = openledger_state::modules::rlhf::commitment(
                round, validator, score, prefer, kept.salt,
            );
            // Kept before sending: a commitment on chain without its salt could never be revealed.
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d)?;
            }
            crate::home::write_atomically(&path, &serde_json::to_string_pretty(&kept)?)?;
            let sent = send(
                s,
                U256::ZERO,
                IRlhf::commitRatingCall {
                    roundId: round,
                    commitment,
                },
            );
            if sent.is_err() {
                let _ = std::fs::remove_file(&path);
            }
            sent
        }
        RlhfCmd::Reveal { round } => {
            let validator = s.signer()?.address();
            let path = kept_path(s, validator, round);
            let raw = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "no rating committed from this home for {validator} in round {round} ({})",
                    path.display()
                )
            })?;
            let k: Kept = serde_json::from_str(&raw)
                .with_context(|| format!("reading {}", path.display()))?;
            send(
                s,
                U256::ZERO,
                IRlhf::revealRatingCall {
                    roundId: k.round,
                    scoreBps: k.score,
                    preferred: k.preferred,
                    salt: k.salt,
                },
            )
        }
        RlhfCmd::Finalize { round } => {
            send(s, U256::ZERO, IRlhf::finalizeRoundCall { roundId: round })
        }
        RlhfCmd::Fund { amount } => send(s, amount, IRlhf::fundRewardsCall {}),
        RlhfCmd::Show { round: None, .. } => {
            println!("validators   {}", view(s, IRlhf::validatorCountCall {})?);
            println!(
                "reward pool  {} OPEN",
                format_open(view(s, IRlhf::rewardPoolCall {})?)
            );
            println!("rounds       {}", view(s, IRlhf::roundCountCall {})?);
            println!("preferences  {}", view(s, IRlhf::preferenceCountCall {})?);
            Ok(())
        }
        RlhfCmd::Show {
            round: Some(id),
            texts,
        } => {
            let r = view(s, IRlhf::getRoundCall { roundId: id })?;
            show(&r);
            for v in view(s, IRlhf::validatorsOfCall { roundId: id })? {
                let rt = view(
                    s,
                    IRlhf::ratingOfCall {
                        roundId: id,
                        validator: v,
                    },
                )?;
                if rt.revealed {
                    println!(
                        "  {v}: score {} bps, preferred {}",
                        rt.scoreBps, rt.preferred
                    );
                } else {
                    println!("  {v}: committed, not revealed");
                }
            }
            if !texts.is_empty() {
                let t = read_texts(&texts)?;
                check_round_texts(&r, &t)?;
                println!("the texts match the round's hashes");
            }
            Ok(())
        }
        RlhfCmd::Export { out, texts, format } => {
            let texts = if texts.is_empty() {
                let default = dir(s).join("texts.jsonl");
                if default.exists() {
                    vec![default]
                } else {
                    Vec::new()
                }
            } else {
                texts
            };
            let t = read_texts(&texts)?;
            let n = view(s, IRlhf::preferenceCountCall {})?;
            let mut prefs = Vec::new();
            let mut from = 1u64;
            while from <= n {
                let page = view(
                    s,
                    IRlhf::preferencesCall {
                        from,
                        count: openledger_state::modules::rlhf::MAX_PAGE,
                    },
                )?;
                if page.is_empty() {
                    break;
                }
                from += page.len() as u64;
                prefs.extend(page);
            }
            let (rows, skipped) = export_rows(&prefs, &t, &format);
            let mut text = String::new();
            for r in &rows {
                text.push_str(&serde_json::to_string(r)?);
                text.push('\n');
            }
            match out {
                Some(p) => {
                    crate::home::write_atomically(&p, &text)?;
                    eprintln!(
                        "wrote {} {format} rows to {} ({skipped} preferences skipped: their texts are missing or do not match the on-chain hashes)",
                        rows.len(),
                        p.display()
                    );
                }
                None => {
                    print!("{text}");
                    eprintln!(
                        "{} {format} rows ({skipped} preferences skipped: texts missing or not matching)",
                        rows.len()
                    );
                }
            }
            Ok(())
        }
    }
}

/// Checks texts against a round's hashes.
fn check_round_texts(r: &IRlhf::Round, t: &HashMap<u64, Text>) -> Result<()> {
    for (receipt, hash) in [(r.receiptA, r.outputHashA), (r.receiptB, r.outputHashB)] {
        if receipt == 0 {
            continue;
        }
        let text = t
            .get(&receipt)
            .with_context(|| format!("no text for receipt {receipt}"))?;
        if keccak256(text.prompt.as_bytes()) != r.promptHash {
            bail!("the prompt given for receipt {receipt} is not the one round {} rates (its keccak-256 differs)", r.id);
        }
        if keccak256(text.response.as_bytes()) != hash {
            bail!(
                "the answer given for receipt {receipt} is not the one round {} rates (its keccak-256 differs)",
                r.id
            );
        }
    }
    Ok(())
}

/// Dataset rows for preferences whose texts match the on-chain hashes; returns the rows and how
/// many preferences were skipped.
pub fn export_rows(
    prefs: &[IRlhf::Preference],
    t: &HashMap<u64, Text>,
    format: &str,
) -> (Vec<serde_json::Value>, usize) {
    let mut rows = Vec::new();
    let mut skipped = 0;
    for p in prefs {
        let (Some(c), Some(r)) = (t.get(&p.chosenReceipt), t.get(&p.rejectedReceipt)) else {
            skipped += 1;
            continue;
        };
        let ok = keccak256(c.prompt.as_bytes()) == p.promptHash
            && c.prompt == r.prompt
            && keccak256(c.response.as_bytes()) == p.chosenOutputHash
            && keccak256(r.response.as_bytes()) == p.rejectedOutputHash;
        if !ok {
            skipped += 1;
            continue;
        }
        rows.push(if format == "sft" {
            json!({
                "prompt": c.prompt,
                "response": c.response,
                "round": p.roundId,
                "receipt": p.chosenReceipt,
            })
        } else {
            json!({
                "prompt": c.prompt,
                "chosen": c.response,
                "rejected": r.response,
                "round": p.roundId,
                "chosen_receipt": p.chosenReceipt,
                "rejected_receipt": p.rejectedReceipt,
            })
        });
    }
    (rows, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(receipt: u64, prompt: &str, response: &str) -> Text {
        Text {
            receipt,
            prompt: prompt.into(),
            response: response.into(),
        }
    }

    #[test]
    fn only_texts_matching_the_rated_hashes_are_exported() {
        let h = |s: &str| keccak256(s.as_bytes());
        let pref = IRlhf::Preference {
            roundId: 3,
            promptHash: h("Why bees?"),
            chosenReceipt: 7,
            rejectedReceipt: 8,
            chosenOutputHash: h("Pollination."),
            rejectedOutputHash: h("No idea."),
        };
        let mut t = HashMap::new();
        t.insert(7, text(7, "Why bees?", "Pollination."));
        t.insert(8, text(8, "Why bees?", "No idea."));
        let (rows, skipped) = export_rows(std::slice::from_ref(&pref), &t, "dpo");
        assert_eq!(skipped, 0);
        assert_eq!(rows[0]["prompt"], "Why bees?");
        assert_eq!(rows[0]["chosen"], "Pollination.");
        assert_eq!(rows[0]["rejected"], "No idea.");
        let (rows, _) = export_rows(std::slice::from_ref(&pref), &t, "sft");
        assert_eq!(rows[0]["response"], "Pollination.");
        // A doctored answer no longer matches what the validators rated.
        t.insert(7, text(7, "Why bees?", "Pollination!"));
        let (rows, skipped) = export_rows(&[pref], &t, "dpo");
        assert!(rows.is_empty());
        assert_eq!(skipped, 1);
    }

    #[test]
    fn preferences_parse_by_letter() {
        assert_eq!(parse_preference("A"), Ok(1));
        assert_eq!(parse_preference("b"), Ok(2));
        assert_eq!(parse_preference("none"), Ok(0));
        assert!(parse_preference("c").is_err());
    }
}
