//! The datanet step: the owner creates "Urban beekeeping" from the sample's README; alice, bob,
//! carol and dave contribute their sample files (bob's three copies of alice's rows are refused
//! as duplicates); erin uploads her prompt/response file, which a text datanet's ingest refuses;
//! frank uploads a copy of alice's file (every row a duplicate); mallory contributes an
//! off-topic file that the owner rejects. The owner approves the four sample contributions.
//! Then the owner creates "Urban beekeeping Q&A", a prompt/response datanet, where alice, bob,
//! carol and dave each ask the questions of their own planted facts and answer them with their
//! row's sentence (`qa-facts/NAME.jsonl`): the rows that teach the adapter to answer.

use super::{report::ContributorReport, Ctx};
use anyhow::{bail, Context, Result};
use openledger_node::datanets::views::{ContributionView, DatanetView};

/// The sample files the demo reads (relative to --sample).
pub const SAMPLE_FILES: &[&str] = &[
    "README.md",
    "alice.jsonl",
    "bob.txt",
    "carol.md",
    "dave.csv",
    "qa/erin.jsonl",
    "qa-facts/alice.jsonl",
    "qa-facts/bob.jsonl",
    "qa-facts/carol.jsonl",
    "qa-facts/dave.jsonl",
];

/// The four contributors whose sample files are accepted, in the README's order.
const ACCEPTED: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// Off-topic rows mallory contributes (valid text, rejected by the owner).
const OFF_TOPIC: &[&str] = &[
    "Buy the new MoonRocket token today: early holders are guaranteed a hundred times their money by the end of the month, and every referral doubles your airdrop allocation automatically.",
    "Our trading bot never loses. Connect your wallet, approve unlimited spending and watch the profits arrive every hour while you sleep; withdrawals open after the next halving.",
    "Limited offer: send any amount of OPEN to the address in our profile and receive twice as much back within minutes. This promotion ends when the pool is empty, so act now.",
];

/// The newest datanet's id (read back after creating it).
pub fn datanet_id(ctx: &Ctx) -> Result<u64> {
    let all: Vec<DatanetView> = ctx.session().rest(false)?.get("/v1/datanets")?;
    all.iter()
        .map(|d| d.id)
        .max()
        .context("no datanet on the chain")
}

fn contributions(ctx: &Ctx, datanet: u64) -> Result<Vec<ContributionView>> {
    ctx.session()
        .rest(false)?
        .get(&format!("/v1/datanets/{datanet}/contributions"))
}

/// The newest contribution of `name` to `datanet`, if any.
fn contribution_of(ctx: &Ctx, datanet: u64, name: &str) -> Result<Option<ContributionView>> {
    let who = ctx.accounts.addr(name)?;
    Ok(contributions(ctx, datanet)?
        .into_iter()
        .filter(|c| c.contributor == who)
        .max_by_key(|c| c.id))
}

/// `name` contributes `file`: the contribution on chain, or the ingest's refusal.
fn contribute(
    ctx: &Ctx,
    datanet: u64,
    name: &str,
    file: &std::path::Path,
) -> Result<std::result::Result<ContributionView, String>> {
    println!("\n  {name} contributes {}", file.display());
    let id = datanet.to_string();
    let path = file.display().to_string();
    match ctx.ol(Some(name), &["datanet", "contribute", &id, &path]) {
        Ok(()) => {
            let c = contribution_of(ctx, datanet, name)?
                .with_context(|| format!("{name}'s contribution is not on chain"))?;
            Ok(Ok(c))
        }
        Err(e) => {
            let why = format!("{e:#}");
            println!("  refused: {why}");
            Ok(Err(why))
        }
    }
}

/// Builds and approves the datanet; records each contributor's outcome in the report.
pub fn build(ctx: &mut Ctx) -> Result<()> {
    let sample = ctx.args.sample.clone();
    let readme = format!("@{}", sample.join("README.md").display());
    ctx.ol(
        Some("owner"),
        &[
            "datanet",
            "create",
            "Urban beekeeping",
            "--summary",
            "Practical notes on keeping bees in cities",
            "--tags",
            "bees,cities",
            "--description",
            &readme,
        ],
    )?;
    let datanet = datanet_id(ctx)?;
    ctx.report.datanet_id = datanet;
    let work = ctx.home.join("demo-files");
    std::fs::create_dir_all(&work)?;

    // The four sample contributors, in the README's order (so the first copy keeps the credit).
    for (name, file) in ACCEPTED
        .into_iter()
        .zip(["alice.jsonl", "bob.txt", "carol.md", "dave.csv"])
    {
        let c = contribute(ctx, datanet, name, &sample.join(file))?
            .map_err(|why| anyhow::anyhow!("{name}'s sample file was refused: {why}"))?;
        ctx.report.contributors.push(ContributorReport::new(
            name,
            ctx.accounts.addr(name)?,
            file,
            Some(&c),
            "accepted",
        ));
    }

    // erin: prompt/response rows in a text datanet.
    let erin = contribute(ctx, datanet, "erin", &sample.join("qa/erin.jsonl"))?;
    let outcome = refused_or_reject(ctx, "erin", erin, "prompt/response rows in a text datanet")?;
    ctx.report.contributors.push(outcome);

    // frank: a byte-for-byte copy of alice's file.
    let copy = work.join("frank.jsonl");
    std::fs::copy(sample.join("alice.jsonl"), &copy).context("copying alice.jsonl")?;
    let frank = contribute(ctx, datanet, "frank", &copy)?;
    let outcome = refused_or_reject(ctx, "frank", frank, "every row duplicates alice's")?;
    ctx.report.contributors.push(outcome);

    // mallory: valid rows, off topic; the owner rejects them.
    let spam = work.join("mallory.jsonl");
    let lines: Vec<String> = OFF_TOPIC
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    std::fs::write(&spam, lines.join("\n") + "\n")?;
    let mallory = contribute(ctx, datanet, "mallory", &spam)?;
    let outcome = refused_or_reject(ctx, "mallory", mallory, "off topic: token spam")?;
    ctx.report.contributors.push(outcome);

    // The owner approves the sample contributions: each approval is a new immutable version.
    for name in ACCEPTED {
        let c = contribution_of(ctx, datanet, name)?.context("missing contribution")?;
        println!();
        approve(ctx, name, &c)?;
    }
    let d = approved(ctx, datanet)?;
    ctx.report.datanet_version = d.version_count;
    // Refresh the accepted contributions (their status and version after approval).
    let now = contributions(ctx, datanet)?;
    for r in ctx.report.contributors.iter_mut() {
        if let Some(id) = r.contribution_id {
            if let Some(c) = now.iter().find(|c| c.id == id) {
                r.rows = c.row_count;
                r.status = format!("{:?}", c.status).to_lowercase();
            }
        }
    }
    println!();
    ctx.ol(None, &["datanet", "leaderboard", &datanet.to_string()])?;
    println!(
        "  datanet {datanet} version {}: {} rows",
        d.version_count, d.row_count
    );
    build_qa(ctx)
}

/// The prompt/response datanet: each accepted contributor asks and answers the questions of
/// their own planted facts; the owner approves every contribution.
fn build_qa(ctx: &mut Ctx) -> Result<()> {
    let sample = ctx.args.sample.clone();
    println!("\n  owner creates a prompt/response datanet for the planted-fact questions");
    ctx.ol(
        Some("owner"),
        &[
            "datanet",
            "create",
            "Urban beekeeping Q&A",
            "--type",
            "prompt-response",
            "--summary",
            "Questions about the sample's named techniques, answered by their authors",
            "--tags",
            "bees,cities,qa",
        ],
    )?;
    let datanet = datanet_id(ctx)?;
    if datanet == ctx.report.datanet_id {
        bail!("the prompt/response datanet was not created");
    }
    ctx.report.qa_datanet_id = datanet;
    for name in ACCEPTED {
        let file = format!("qa-facts/{name}.jsonl");
        let c = contribute(ctx, datanet, name, &sample.join(&file))?
            .map_err(|why| anyhow::anyhow!("{name}'s question file was refused: {why}"))?;
        approve(ctx, name, &c)?;
    }
    let d = approved(ctx, datanet)?;
    ctx.report.qa_datanet_version = d.version_count;
    for c in contributions(ctx, datanet)? {
        if let Some(r) = ctx
            .report
            .contributors
            .iter_mut()
            .find(|r| r.address == c.contributor)
        {
            r.qa_contribution_id = Some(c.id);
            r.qa_rows = c.row_count;
        }
    }
    println!(
        "  datanet {datanet} version {}: {} prompt/response rows",
        d.version_count, d.row_count
    );
    Ok(())
}

/// The owner approves `name`'s contribution `c` (a new immutable version of its datanet).
fn approve(ctx: &Ctx, name: &str, c: &ContributionView) -> Result<()> {
    println!("  owner approves contribution {} ({name})", c.id);
    ctx.ol(Some("owner"), &["datanet", "approve", &c.id.to_string()])
}

/// The datanet after its approvals; fails when it still has no version.
fn approved(ctx: &Ctx, datanet: u64) -> Result<DatanetView> {
    let d: DatanetView = ctx
        .session()
        .rest(false)?
        .get(&format!("/v1/datanets/{datanet}"))?;
    if d.version_count == 0 {
        bail!("datanet {datanet} has no version after the approvals");
    }
    Ok(d)
}

/// The outcome for a contributor who must not get in: refused by the ingest, or (when the
/// ingest accepted the file) rejected by the owner with `reason`.
fn refused_or_reject(
    ctx: &Ctx,
    name: &str,
    staged: std::result::Result<ContributionView, String>,
    reason: &str,
) -> Result<ContributorReport> {
    let address = ctx.accounts.addr(name)?;
    let file = match name {
        "erin" => "qa/erin.jsonl",
        "frank" => "frank.jsonl (a copy of alice.jsonl)",
        _ => "mallory.jsonl (off-topic)",
    };
    match staged {
        Err(why) => Ok(ContributorReport::new(
            name,
            address,
            file,
            None,
            &format!("refused by the ingest: {}", last_line(&why)),
        )),
        Ok(c) => {
            println!("  owner rejects contribution {} ({name}): {reason}", c.id);
            ctx.ol(
                Some("owner"),
                &["datanet", "reject", &c.id.to_string(), reason],
            )?;
            Ok(ContributorReport::new(
                name,
                address,
                file,
                Some(&c),
                &format!("rejected by the owner: {reason}"),
            ))
        }
    }
}

/// The innermost reason of an error chain printed with `{:#}`.
fn last_line(why: &str) -> &str {
    why.rsplit(": ").next().unwrap_or(why)
}
