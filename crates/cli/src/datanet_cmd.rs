//! `openledger datanet …`: create datanets, contribute files (the node ingests them and stores
//! the rows; the chain records the rows root), approve or reject, manage access, and read
//! datanets back: versions, contributions, rows, contributors, leaderboard, JSONL export, and row
//! inclusion proofs that anyone can verify against the on-chain version root.

use crate::{
    commands::{show, text_arg, Session},
    rest::{RestError, Upload},
};
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolCall;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use openledger_datanet::{
    hash::to_b256, normalize::normalize_row, row_hash, ContributorStats, DatanetProof, Report, Row,
};
use openledger_node::datanets::{
    views::{ContributionView, DatanetView, VersionView},
    ExportRow, Staged,
};
use openledger_types::{abi::IDatanet, modules};
use serde_json::Value;
use std::{io::Write, path::PathBuf};

/// What a datanet's rows are.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SchemaArg {
    /// Free text (`{"text": ...}`): .txt, .md, .jsonl, .csv, .pdf, .docx.
    Text,
    /// Instruction pairs (`{"prompt": ..., "response": ...}`): .jsonl, .csv.
    PromptResponse,
}

#[derive(Subcommand)]
pub enum DatanetCmd {
    /// Create a datanet (you become its owner).
    Create {
        name: String,
        #[arg(long, default_value = "")]
        summary: String,
        /// Markdown description (or @file to read it from a file).
        #[arg(long, default_value = "")]
        description: String,
        /// Comma-separated tags.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// What the rows are.
        #[arg(long = "type", value_enum, default_value_t = SchemaArg::Text)]
        schema: SchemaArg,
        #[arg(long, default_value = "CC-BY-4.0")]
        licence: String,
        /// Only the owner and granted addresses may contribute, read rows and train.
        #[arg(long)]
        permissioned: bool,
    },
    /// Contribute files (.txt .md .jsonl .csv .pdf .docx) with --from KEY: the files are
    /// uploaded signed by your key; the node parses, validates, scores and deduplicates them and
    /// stores the accepted rows; then the contribution (rows root, row count, bytes, score — as
    /// the node computed them, which the chain's sequencer checks) is recorded on chain.
    Contribute {
        datanet: u64,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Show the report only; record nothing on chain (the upload is still signed).
        #[arg(long)]
        dry_run: bool,
        /// Also write the full JSON report to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Approve a contribution into a new version (owner; pays the size-based fee).
    Approve {
        contribution: u64,
        /// Approve even when this node does not hold the contribution's rows.
        #[arg(long)]
        force: bool,
    },
    /// Reject a contribution with a reason (owner).
    Reject { contribution: u64, reason: String },
    /// Ask the owner of a permissioned datanet for access.
    RequestAccess {
        datanet: u64,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Grant access to a permissioned datanet (owner).
    GrantAccess { datanet: u64, user: Address },
    /// Revoke access (owner).
    RevokeAccess { datanet: u64, user: Address },
    /// List every datanet.
    List,
    /// Show a datanet.
    Show { datanet: u64 },
    /// List a datanet's versions and their roots.
    Versions { datanet: u64 },
    /// List a datanet's contributions.
    Contributions { datanet: u64 },
    /// Show one contribution.
    Contribution { id: u64 },
    /// Show one version.
    Version { datanet: u64, version: u64 },
    /// Print rows of a version (latest by default) with their contribution and contributor, or
    /// with --contribution the rows of one contribution (pending ones too, for review).
    Rows {
        #[arg(required_unless_present = "contribution")]
        datanet: Option<u64>,
        #[arg(long, default_value_t = 0, conflicts_with = "contribution")]
        version: u64,
        #[arg(long)]
        contribution: Option<u64>,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// Contributors and their record.
    Contributors { datanet: u64 },
    /// Contributors ranked by rows accepted, with acceptance rate and consistency.
    Leaderboard {
        datanet: u64,
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Export a version (latest by default) as JSONL: each row with its contribution id and
    /// contributor address.
    Export {
        datanet: u64,
        #[arg(long, default_value_t = 0)]
        version: u64,
        /// Write here (atomically) instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Print a row's Merkle inclusion proof against a version's on-chain root (JSON).
    Prove {
        datanet: u64,
        /// The row's hash (from `rows` or `export`).
        #[arg(required_unless_present_any = ["text", "prompt"])]
        row: Option<B256>,
        /// Or the row's text (text datanets).
        #[arg(long, conflicts_with_all = ["row", "prompt"])]
        text: Option<String>,
        /// Or the row's prompt (prompt/response datanets; with --response).
        #[arg(long, requires = "response", conflicts_with = "row")]
        prompt: Option<String>,
        #[arg(long, requires = "prompt")]
        response: Option<String>,
        #[arg(long, default_value_t = 0)]
        version: u64,
        /// Write the proof here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Verify a proof from `prove`: the row's text, both Merkle paths, and (unless --offline)
    /// the version root, rows root and contributor against the chain.
    VerifyProof {
        file: PathBuf,
        /// Check the paths only; do not ask the node for the on-chain roots.
        #[arg(long)]
        offline: bool,
    },
}

fn bps(b: u16) -> String {
    format!("{}.{:02}%", b / 100, b % 100)
}

/// Runs a datanet subcommand.
pub fn run(s: &Session, c: DatanetCmd) -> Result<()> {
    let call = |data: Vec<u8>| s.call(modules::DATANET, U256::ZERO, data);
    match c {
        DatanetCmd::Create {
            name,
            summary,
            description,
            tags,
            schema,
            licence,
            permissioned,
        } => call(
            IDatanet::createDatanetCall {
                name,
                summary,
                description: text_arg(&description)?,
                tags,
                dataType: match schema {
                    SchemaArg::Text => 0,
                    SchemaArg::PromptResponse => 1,
                },
                licence,
                permissioned,
            }
            .abi_encode(),
        ),
        DatanetCmd::Contribute {
            datanet,
            files,
            dry_run,
            report,
        } => contribute(s, datanet, &files, dry_run, report),
        DatanetCmd::Approve {
            contribution,
            force,
        } => {
            let c: ContributionView = s
                .rest(false)?
                .get(&format!("/v1/contributions/{contribution}"))?;
            let all: Vec<ContributionView> = s
                .rest(false)?
                .get(&format!("/v1/datanets/{}/contributions", c.datanet_id))?;
            let why = all
                .into_iter()
                .find(|x| x.id == contribution)
                .and_then(|x| x.rows_unavailable);
            if let Some(why) = why {
                if !force {
                    bail!("contribution {contribution} cannot be served by this node: {why}; approving it would publish a version nobody can export (pass --force to approve anyway)");
                }
                eprintln!("warning: approving contribution {contribution} although {why}");
            }
            call(
                IDatanet::approveCall {
                    contributionId: contribution,
                }
                .abi_encode(),
            )
        }
        DatanetCmd::Reject {
            contribution,
            reason,
        } => call(
            IDatanet::rejectCall {
                contributionId: contribution,
                reason,
            }
            .abi_encode(),
        ),
        DatanetCmd::RequestAccess { datanet, note } => call(
            IDatanet::requestAccessCall {
                datanetId: datanet,
                note,
            }
            .abi_encode(),
        ),
        DatanetCmd::GrantAccess { datanet, user } => call(
            IDatanet::grantAccessCall {
                datanetId: datanet,
                user,
            }
            .abi_encode(),
        ),
        DatanetCmd::RevokeAccess { datanet, user } => call(
            IDatanet::revokeAccessCall {
                datanetId: datanet,
                user,
            }
            .abi_encode(),
        ),
        DatanetCmd::List => {
            let all: Vec<DatanetView> = s.rest(false)?.get("/v1/datanets")?;
            if all.is_empty() {
                println!("no datanets yet: create one with `openledger datanet create <name>`");
            }
            println!(
                "{:>4}  {:<28} {:<14} {:>8} {:>8} {:>7}  owner",
                "id", "name", "access", "versions", "rows", "contrib"
            );
            for d in all {
                println!(
                    "{:>4}  {:<28} {:<14} {:>8} {:>8} {:>7}  {}",
                    d.id,
                    d.name,
                    if d.permissioned {
                        "permissioned"
                    } else {
                        "public"
                    },
                    d.version_count,
                    d.row_count,
                    d.contribution_count,
                    d.owner
                );
            }
            Ok(())
        }
        DatanetCmd::Show { datanet } => {
            let d: DatanetView = s.rest(false)?.get(&format!("/v1/datanets/{datanet}"))?;
            println!("datanet {} — {}", d.id, d.name);
            println!("  summary       {}", d.summary);
            println!("  owner         {}", d.owner);
            println!(
                "  type          {}",
                d.schema.map(|x| x.to_string()).unwrap_or("unknown".into())
            );
            println!("  licence       {}", d.licence);
            println!(
                "  access        {}",
                if d.permissioned {
                    "permissioned"
                } else {
                    "public"
                }
            );
            println!("  tags          {}", d.tags.join(", "));
            println!(
                "  versions      {} (latest root {})",
                d.version_count, d.latest_root
            );
            println!("  rows          {}", d.row_count);
            println!("  contributions {}", d.contribution_count);
            if !d.description.is_empty() {
                println!("\n{}", d.description);
            }
            Ok(())
        }
        DatanetCmd::Versions { datanet } => {
            let vs: Vec<VersionView> = s
                .rest(false)?
                .get(&format!("/v1/datanets/{datanet}/versions"))?;
            if vs.is_empty() {
                println!("datanet {datanet} has no versions yet (no contribution approved)");
            }
            for v in vs {
                println!(
                    "version {:>3}  root {}  contribution {:>4}  rows {:>7}  at {}",
                    v.version, v.root, v.contribution_id, v.row_count, v.created_at
                );
            }
            Ok(())
        }
        DatanetCmd::Contributions { datanet } => {
            let cs: Vec<ContributionView> = s
                .rest(false)?
                .get(&format!("/v1/datanets/{datanet}/contributions"))?;
            for c in cs {
                let status = match (c.status, c.version) {
                    (openledger_datanet::Status::Approved, v) => format!("approved (v{v})"),
                    (openledger_datanet::Status::Rejected, _) => format!("rejected: {}", c.reason),
                    _ => "pending".into(),
                };
                println!(
                    "{:>4}  {}  {:>6} rows {:>9} bytes  score {:>7}  {}{}",
                    c.id,
                    c.contributor,
                    c.row_count,
                    c.byte_size,
                    bps(c.score_bps),
                    status,
                    c.rows_unavailable
                        .map(|w| format!("  [rows unavailable: {w}]"))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        DatanetCmd::Contribution { id } => {
            let c: ContributionView = s.rest(false)?.get(&format!("/v1/contributions/{id}"))?;
            println!("{}", serde_json::to_string_pretty(&c)?);
            Ok(())
        }
        DatanetCmd::Version { datanet, version } => {
            let out = s.rpc()?.view(
                modules::DATANET,
                IDatanet::getVersionCall {
                    datanetId: datanet,
                    version,
                }
                .abi_encode(),
            )?;
            show(IDatanet::getVersionCall::abi_decode_returns(&out)?);
            Ok(())
        }
        DatanetCmd::Rows {
            datanet,
            version,
            contribution,
            offset,
            limit,
        } => {
            let path = match (contribution, datanet) {
                (Some(c), _) => format!("/v1/contributions/{c}/rows?offset={offset}&limit={limit}"),
                (None, Some(d)) => {
                    format!("/v1/datanets/{d}/rows?version={version}&offset={offset}&limit={limit}")
                }
                (None, None) => bail!("name a datanet or pass --contribution"),
            };
            let v: Value = s.rest(true)?.get(&path)?;
            let rows: Vec<ExportRow> = serde_json::from_value(v["rows"].clone())?;
            let what = match contribution {
                Some(c) => format!("contribution {c}"),
                None => format!(
                    "version {} of datanet {}",
                    v["version"],
                    datanet.unwrap_or(0)
                ),
            };
            eprintln!("{what}, rows {}..{}", offset, offset + rows.len() as u64);
            for r in rows {
                let text = r.row.fields().join(" ⏎ ");
                let short: String = text.chars().take(100).collect();
                println!(
                    "{}  c{:<4} {}  {}{}",
                    r.row_hash,
                    r.contribution_id,
                    r.contributor,
                    short,
                    if short.len() < text.len() { "…" } else { "" }
                );
            }
            Ok(())
        }
        DatanetCmd::Contributors { datanet } | DatanetCmd::Leaderboard { datanet, .. } => {
            let top = match c {
                DatanetCmd::Leaderboard { top, .. } => top,
                _ => usize::MAX,
            };
            let stats: Vec<ContributorStats> = s
                .rest(false)?
                .get(&format!("/v1/datanets/{datanet}/contributors"))?;
            println!(
                "{:>4}  {:<42} {:>9} {:>9} {:>9} {:>11} {:>11} {:>11}",
                "rank",
                "contributor",
                "submitted",
                "approved",
                "rejected",
                "rows",
                "acceptance",
                "consistency"
            );
            for (i, st) in stats.iter().take(top).enumerate() {
                println!(
                    "{:>4}  {:<42} {:>9} {:>9} {:>9} {:>11} {:>11} {:>11}",
                    i + 1,
                    st.contributor.to_string(),
                    st.submitted,
                    st.approved,
                    st.rejected,
                    st.rows_accepted,
                    bps(st.acceptance_bps),
                    bps(st.consistency_bps)
                );
            }
            Ok(())
        }
        DatanetCmd::Export {
            datanet,
            version,
            out,
        } => {
            let rest = s.rest(true)?;
            let route = format!("/v1/datanets/{datanet}/export?version={version}");
            // Rows are written as they arrive; a file is renamed into place only once whole.
            match out {
                Some(path) => {
                    let tmp = path.with_extension("partial");
                    let file = std::fs::File::create(&tmp)
                        .with_context(|| format!("writing {}", tmp.display()))?;
                    let mut w = LineCounter::new(std::io::BufWriter::new(file));
                    let copied = rest.get_to(&route, &mut w).and_then(|_| {
                        let file = w.inner.into_inner().map_err(|e| e.into_error())?;
                        file.sync_all()?;
                        Ok(w.lines)
                    });
                    let rows = match copied {
                        Ok(rows) => rows,
                        Err(e) => {
                            let _ = std::fs::remove_file(&tmp);
                            return Err(e);
                        }
                    };
                    std::fs::rename(&tmp, &path)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "wrote {rows} rows of datanet {datanet} to {}",
                        path.display()
                    );
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut w = stdout.lock();
                    rest.get_to(&route, &mut w)?;
                    w.flush()?;
                }
            }
            Ok(())
        }
        DatanetCmd::Prove {
            datanet,
            row,
            text,
            prompt,
            response,
            version,
            out,
        } => {
            let hash = match (row, text, prompt, response) {
                (Some(h), ..) => h,
                (None, Some(t), ..) => to_b256(&row_hash(&normalize_row(&Row::text(t)))),
                (None, None, Some(p), Some(r)) => {
                    to_b256(&row_hash(&normalize_row(&Row::prompt_response(p, r))))
                }
                _ => bail!("name the row: its hash, --text, or --prompt with --response"),
            };
            let proof: DatanetProof = s.rest(true)?.get(&format!(
                "/v1/datanets/{datanet}/proof?row={hash}&version={version}"
            ))?;
            let json = serde_json::to_string_pretty(&proof)? + "\n";
            match out {
                Some(path) => {
                    write_atomically(&path, json.as_bytes())?;
                    eprintln!(
                        "proof of row {hash} in version {} of datanet {datanet} (root {}) written to {}",
                        proof.version,
                        proof.version_root,
                        path.display()
                    );
                }
                None => print!("{json}"),
            }
            Ok(())
        }
        DatanetCmd::VerifyProof { file, offline } => verify_proof(s, &file, offline),
    }
}

/// Passes bytes through, counting lines.
struct LineCounter<W> {
    inner: W,
    lines: u64,
}

impl<W> LineCounter<W> {
    fn new(inner: W) -> Self {
        LineCounter { inner, lines: 0 }
    }
}

impl<W: Write> Write for LineCounter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn contribute(
    s: &Session,
    datanet: u64,
    files: &[PathBuf],
    dry_run: bool,
    report_path: Option<PathBuf>,
) -> Result<()> {
    // Staging is signed (dry runs too): fail on a missing or locked key before uploading.
    s.signer()
        .map_err(|e| anyhow!("contributing uploads the files signed by your key: {e}"))?;
    let mut uploads = Vec::with_capacity(files.len());
    for f in files {
        let meta = std::fs::metadata(f).with_context(|| format!("reading {}", f.display()))?;
        if !meta.is_file() {
            bail!("{} is not a file", f.display());
        }
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| anyhow!("{} has no file name", f.display()))?;
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        uploads.push(Upload { name, bytes });
    }
    let total: usize = uploads.iter().map(|u| u.bytes.len()).sum();
    eprintln!(
        "uploading {} file(s), {total} bytes, to datanet {datanet} for validation…",
        uploads.len()
    );
    let staged: Result<Staged> = s
        .rest(true)?
        .upload(&format!("/v1/datanets/{datanet}/stage"), &uploads);
    let staged = match staged {
        Ok(st) => st,
        Err(e) => {
            if let Some(r) = e.downcast_ref::<RestError>() {
                if let Ok(report) = serde_json::from_value::<Report>(r.body["report"].clone()) {
                    eprint!("{}", report.summary(10));
                    if let Some(p) = &report_path {
                        write_atomically(p, serde_json::to_string_pretty(&report)?.as_bytes())?;
                    }
                }
            }
            return Err(e);
        }
    };
    let r = &staged.report;
    print!("{}", r.summary(10));
    if let Some(p) = &report_path {
        write_atomically(p, serde_json::to_string_pretty(r)?.as_bytes())?;
    }
    println!(
        "rows root {}  rows blob {}",
        r.rows_root, staged.metadata_uri
    );
    if dry_run {
        println!("dry run: nothing recorded on chain");
        return Ok(());
    }
    s.call(
        modules::DATANET,
        U256::ZERO,
        IDatanet::contributeCall {
            datanetId: datanet,
            rowsRoot: r.rows_root,
            rowCount: r.row_count,
            byteSize: r.byte_size,
            score: r.score_bps,
            metadataUri: staged.metadata_uri.clone(),
        }
        .abi_encode(),
    )
}

fn verify_proof(s: &Session, file: &std::path::Path, offline: bool) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let p: DatanetProof = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a datanet proof", file.display()))?;
    p.verify().map_err(|e| anyhow!("INVALID proof: {e}"))?;
    println!(
        "paths valid: row {} is row {} of contribution {} (rows root {}), in version {} of datanet {} with root {}",
        p.row_hash, p.row_index, p.contribution_id, p.rows_root, p.version, p.datanet_id, p.version_root
    );
    if offline {
        println!("offline: the roots were not compared with the chain");
        return Ok(());
    }
    let rpc = s.rpc()?;
    let v = IDatanet::getVersionCall::abi_decode_returns(
        &rpc.view(
            modules::DATANET,
            IDatanet::getVersionCall {
                datanetId: p.datanet_id,
                version: p.version,
            }
            .abi_encode(),
        )?,
    )
    .with_context(|| format!("reading version {} of datanet {}", p.version, p.datanet_id))?;
    if v.root != p.version_root {
        bail!(
            "INVALID proof: version {} of datanet {} has root {} on chain, the proof claims {}",
            p.version,
            p.datanet_id,
            v.root,
            p.version_root
        );
    }
    let c = IDatanet::getContributionCall::abi_decode_returns(
        &rpc.view(
            modules::DATANET,
            IDatanet::getContributionCall {
                contributionId: p.contribution_id,
            }
            .abi_encode(),
        )?,
    )?;
    if c.contributor != p.contributor || c.rowsRoot != p.rows_root || c.datanetId != p.datanet_id {
        bail!(
            "INVALID proof: contribution {} on chain is by {} with rows root {} in datanet {}; the proof claims {} / {} / {}",
            c.id, c.contributor, c.rowsRoot, c.datanetId, p.contributor, p.rows_root, p.datanet_id
        );
    }
    println!(
        "VALID: the version root matches the chain, and contribution {} is by {}",
        p.contribution_id, p.contributor
    );
    Ok(())
}
