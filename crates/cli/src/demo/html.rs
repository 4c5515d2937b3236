//! `report.html`: one self-contained page (inline CSS and SVG, nothing fetched) with the rewards
//! per contributor per round, the training loss curve, every answer with its attributed spans
//! highlighted by contributor, the fee split before and after the vote, the balances, the RLHF
//! round and the simulation's outcome.

use super::report::{AnswerReport, Report, RoundReport};
use openledger_sim::html::esc;
use std::fmt::Write;

/// A colour per contributor (by order of the report's contributor list).
const PALETTE: &[&str] = &[
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f",
];

fn colour(r: &Report, name: &str) -> &'static str {
    let i = r
        .contributors
        .iter()
        .position(|c| c.name == name)
        .unwrap_or(PALETTE.len() - 1);
    PALETTE[i % PALETTE.len()]
}

/// The whole page.
pub fn page(r: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>OpenLedger demo report</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}\
         table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:.25em .5em;font-size:.9em}}\
         th{{background:#f3f3f3}}td.n{{text-align:right;font-variant-numeric:tabular-nums}}\
         .answer{{background:#fafafa;border:1px solid #ddd;padding:.6em;margin:.4em 0;line-height:1.8}}\
         mark{{padding:.1em .15em;border-radius:3px;color:#fff}}.fail{{color:#b00;font-weight:bold}}\
         .ok{{color:#070;font-weight:bold}}code{{font-size:.85em}}</style></head><body>"
    );
    let _ = write!(h, "<h1>OpenLedger demo</h1>");
    if r.ok {
        let _ = write!(
            h,
            "<p class=\"ok\">Every step passed in {:.1} s.</p>",
            r.wall_seconds
        );
    } else {
        let _ = write!(
            h,
            "<p class=\"fail\">The demo failed after {:.1} s: {}</p>",
            r.wall_seconds,
            esc(r.failure.as_deref().unwrap_or("unknown"))
        );
    }
    let _ = write!(
        h,
        "<p>Text datanet {} (version {} trained on), prompt/response datanet {} (version {}), \
         adapter {} (<code>beekeeper</code>).</p>",
        r.datanet_id, r.datanet_version, r.qa_datanet_id, r.qa_datanet_version, r.adapter_id
    );
    contributors(&mut h, r);
    h.push_str("<h2>Rewards per contributor per round</h2>");
    h.push_str(&rewards_chart(r));
    h.push_str("<h2>Training loss</h2>");
    h.push_str(&loss_chart(r));
    training(&mut h, r);
    h.push_str("<h2>Answers and their attribution</h2>");
    for round in &r.rounds {
        let _ = write!(h, "<h3>Round {}</h3>", round.round);
        for a in &round.answers {
            answer(&mut h, r, a);
        }
    }
    fee_split(&mut h, r);
    for round in &r.rounds {
        balances(&mut h, round);
    }
    simulation(&mut h, r);
    h.push_str("</body></html>\n");
    h
}

fn contributors(h: &mut String, r: &Report) {
    h.push_str("<h2>Contributors</h2><table><tr><th>name</th><th>address</th><th>file</th><th>outcome</th><th>rows</th><th>Q&amp;A rows</th>");
    for round in &r.rounds {
        let _ = write!(h, "<th>earned round {} (OPEN)</th>", round.round);
    }
    h.push_str("</tr>");
    for c in &r.contributors {
        let _ = write!(
            h,
            "<tr><td><mark style=\"background:{}\">{}</mark></td><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
            colour(r, &c.name),
            esc(&c.name),
            c.address,
            esc(&c.file),
            esc(&c.outcome),
            c.rows,
            c.qa_rows
        );
        for round in &r.rounds {
            let e = round.rewards_open.get(&c.name).copied().unwrap_or(0.0);
            let _ = write!(h, "<td class=\"n\">{e:.9}</td>");
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

/// Grouped bars: each contributor's earnings in each round.
fn rewards_chart(r: &Report) -> String {
    let names: Vec<&str> = r.contributors.iter().map(|c| c.name.as_str()).collect();
    let max = r
        .rounds
        .iter()
        .flat_map(|x| x.rewards_open.values().copied())
        .fold(0.0f64, f64::max);
    let (w, ht, left, bottom) = (760.0, 260.0, 90.0, 40.0);
    let group = (w - left - 10.0) / names.len().max(1) as f64;
    let bar = (group - 12.0) / r.rounds.len().max(1) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-size=\"11\">",
        ht + 30.0
    );
    axis_y(&mut s, left, ht, bottom, max);
    for (i, n) in names.iter().enumerate() {
        let x0 = left + i as f64 * group + 6.0;
        for (j, round) in r.rounds.iter().enumerate() {
            let v = round.rewards_open.get(*n).copied().unwrap_or(0.0);
            let bh = if max > 0.0 {
                v / max * (ht - bottom - 10.0)
            } else {
                0.0
            };
            let x = x0 + j as f64 * bar;
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\" fill-opacity=\"{}\"><title>{} round {}: {v:.9} OPEN</title></rect>",
                ht - bottom - bh,
                bar - 2.0,
                colour(r, n),
                if j == 0 { "0.55" } else { "1" },
                esc(n),
                round.round
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x0 + group / 2.0 - 6.0,
            ht - bottom + 15.0,
            esc(n)
        );
    }
    let _ = write!(
        s,
        "<text x=\"{left}\" y=\"{:.1}\">lighter: round one; darker: round two (after the vote)</text></svg>",
        ht + 10.0
    );
    s
}

/// A y axis from 0 to `max` with four ticks.
fn axis_y(s: &mut String, left: f64, ht: f64, bottom: f64, max: f64) {
    let top = 10.0;
    let _ = write!(
        s,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{:.1}\" stroke=\"#888\"/>",
        ht - bottom
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let y = ht - bottom - (ht - bottom - top) * k as f64 / 4.0;
        let _ = write!(
            s,
            "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{left}\" y2=\"{y:.1}\" stroke=\"#888\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 4.0,
            left - 6.0,
            y + 4.0,
            axis_label(v, max)
        );
    }
}

/// A tick label with enough decimals for the axis' range.
fn axis_label(v: f64, max: f64) -> String {
    if max >= 100.0 {
        openledger_sim::plot::compact(v)
    } else {
        let decimals = (2.0 - max.max(1e-12).log10().floor()).clamp(0.0, 12.0) as usize;
        format!("{v:.decimals$}")
    }
}

/// Training loss per step (one line per round) and validation losses as dots.
fn loss_chart(r: &Report) -> String {
    let pts: Vec<(u64, u64, f64, bool)> = r
        .loss
        .iter()
        .filter_map(|p| match (p.loss, p.val_loss) {
            (Some(l), _) => Some((p.round, p.step, l, false)),
            (None, Some(v)) => Some((p.round, p.step, v, true)),
            _ => None,
        })
        .filter(|p| p.2.is_finite())
        .collect();
    if pts.is_empty() {
        return "<p>No training steps recorded.</p>".into();
    }
    let max_step = pts.iter().map(|p| p.1).max().unwrap_or(1).max(1) as f64;
    let hi = pts.iter().map(|p| p.2).fold(f64::MIN, f64::max);
    let lo = pts.iter().map(|p| p.2).fold(f64::MAX, f64::min);
    let (lo, hi) = if hi - lo < 1e-6 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let (w, ht, left, bottom, top) = (760.0, 260.0, 60.0, 40.0, 10.0);
    let x = |step: u64| left + (w - left - 20.0) * step as f64 / max_step;
    let y = |v: f64| top + (ht - bottom - top) * (hi - v) / (hi - lo);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-size=\"11\">",
        ht + 20.0
    );
    let _ = write!(
        s,
        "<line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#888\"/>",
        ht - bottom,
        w - 20.0,
        ht - bottom
    );
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>",
            left - 6.0,
            y(v) + 4.0
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">step (of {max_step})</text>",
        (left + w) / 2.0,
        ht - bottom + 28.0
    );
    let rounds: std::collections::BTreeSet<u64> = pts.iter().map(|p| p.0).collect();
    for (i, round) in rounds.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let line: Vec<String> = pts
            .iter()
            .filter(|p| p.0 == *round && !p.3)
            .map(|p| format!("{:.1},{:.1}", x(p.1), y(p.2)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"><title>round {round}: training loss</title></polyline>",
            line.join(" ")
        );
        for p in pts.iter().filter(|p| p.0 == *round && p.3) {
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"><title>round {round} step {}: validation loss {:.3}</title></circle>",
                x(p.1),
                y(p.2),
                p.1,
                p.2
            );
        }
    }
    s.push_str("</svg><p>Lines: training loss per step; circles: validation loss.</p>");
    s
}

fn training(h: &mut String, r: &Report) {
    h.push_str("<table><tr><th>round</th><th>steps</th><th>train loss</th><th>val loss</th><th>seconds</th><th>learned every asked fact</th></tr>");
    for t in &r.training {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}</td><td>{}</td></tr>",
            t.round,
            t.steps,
            t.train_loss.map(|v| format!("{v:.3}")).unwrap_or_default(),
            t.val_loss.map(|v| format!("{v:.3}")).unwrap_or_default(),
            t.seconds,
            if t.passed { "yes" } else { "no" }
        );
    }
    h.push_str("</table>");
    learning(h, r);
}

/// The learning check of the published adapter: each question's answers and NLL, base vs adapter.
fn learning(h: &mut String, r: &Report) {
    let margin = super::learning::MARGIN_NATS;
    let _ = write!(
        h,
        "<h2>What the adapter learned</h2><p>Each question the app asks, answered greedily by the \
         base model and by base + adapter (the adapter must state the fact), and the mean negative \
         log-likelihood per token (nats) of the fact's verbatim sentence as the answer to the \
         question under each (the adapter must beat the base by at least {margin}).</p>\
         <table><tr><th>question</th><th>contributor</th><th>base answer</th><th>adapter answer</th>\
         <th>base NLL</th><th>adapter NLL</th><th>Δ</th><th></th></tr>"
    );
    for f in &r.learning {
        let ok = f.learned(margin);
        let _ = write!(
            h,
            "<tr><td title=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td><td class=\"n\">{:+.3}</td><td class=\"{}\">{}</td></tr>",
            esc(&f.sentence),
            esc(&f.question),
            esc(&f.contributor),
            esc(&f.base_answer),
            esc(&f.answer),
            f.base_nll,
            f.adapter_nll,
            f.delta,
            if ok { "ok" } else { "fail" },
            if ok { "learned" } else { "NOT learned" }
        );
    }
    h.push_str("</table>");
}

/// The answer with each attributed span highlighted in its contributor's colour.
fn answer(h: &mut String, r: &Report, a: &AnswerReport) {
    let _ = write!(
        h,
        "<p><b>Q</b> ({}'s fact, <i>{}</i>): {}</p>",
        esc(&a.expected_contributor),
        esc(&a.phrase),
        esc(&a.prompt)
    );
    // Byte ranges of the spans in the answer, first come first served, no overlaps.
    let mut marks: Vec<(usize, usize, &str)> = Vec::new();
    for c in &a.contributions {
        for span in &c.spans {
            let mut from = 0;
            while let Some(i) = a.answer[from..].find(span.as_str()) {
                let (s, e) = (from + i, from + i + span.len());
                if span.is_empty() {
                    break;
                }
                if marks.iter().all(|m| e <= m.0 || s >= m.1) {
                    marks.push((s, e, c.contributor.as_str()));
                    break;
                }
                from = s + span.len().max(1);
                if from >= a.answer.len() {
                    break;
                }
            }
        }
    }
    marks.sort();
    let mut body = String::new();
    let mut at = 0;
    for (s, e, who) in marks {
        body.push_str(&esc(&a.answer[at..s]));
        let _ = write!(
            body,
            "<mark style=\"background:{}\" title=\"{}\">{}</mark>",
            colour(r, who),
            esc(who),
            esc(&a.answer[s..e])
        );
        at = e;
    }
    body.push_str(&esc(&a.answer[at..]));
    let _ = write!(h, "<div class=\"answer\"><b>A</b> {body}</div>");
    let _ = write!(
        h,
        "<p>coverage {:.2}; receipt {}, fee {} wei; attributed to: ",
        a.coverage, a.receipt_id, a.fee_wei
    );
    let parts: Vec<String> = a
        .contributions
        .iter()
        .map(|c| {
            format!(
                "<mark style=\"background:{}\">{}</mark> contribution {} weight {:.3}",
                colour(r, &c.contributor),
                esc(&c.contributor),
                c.contribution_id,
                c.weight
            )
        })
        .collect();
    h.push_str(&parts.join("; "));
    h.push_str("</p>");
}

fn fee_split(h: &mut String, r: &Report) {
    h.push_str("<h2>Fee split</h2>");
    let keys = [
        "platform_bps",
        "model_owner_bps",
        "stakers_bps",
        "contributors_bps",
    ];
    h.push_str("<table><tr><th></th>");
    for k in keys {
        let _ = write!(h, "<th>{}</th>", k.trim_end_matches("_bps"));
    }
    h.push_str("</tr>");
    for round in &r.rounds {
        let _ = write!(h, "<tr><td>round {}</td>", round.round);
        for k in keys {
            let v = round.fee_split[k].as_u64().unwrap_or(0);
            let _ = write!(h, "<td class=\"n\">{:.2}%</td>", v as f64 / 100.0);
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    if let Some(g) = &r.governance {
        let _ = write!(
            h,
            "<p>Proposal <code>{}</code>: {} (passed, queued, executed). RLHF round {} on receipt {}: scores {}; consensus {} bps, {}.</p>",
            esc(&g.proposal_id),
            esc(&g.description),
            g.rlhf.round,
            g.rlhf.receipt,
            g.rlhf
                .scores
                .iter()
                .map(|(v, s)| format!("{} {s}", esc(v)))
                .collect::<Vec<_>>()
                .join(", "),
            g.rlhf.consensus_bps,
            if g.rlhf.finalized { "finalized" } else { "not finalized" }
        );
    }
}

fn balances(h: &mut String, round: &RoundReport) {
    let _ = write!(
        h,
        "<h2>OPEN before and after round {}</h2><table><tr><th>account</th><th>role</th><th>before</th><th>after</th><th>change (wei)</th></tr>",
        round.round
    );
    for b in &round.balances {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:?}</td><td class=\"n\">{:.6}</td><td class=\"n\">{:.6}</td><td class=\"n\">{}</td></tr>",
            esc(&b.name),
            b.role,
            b.before_open,
            b.after_open,
            esc(&b.change_wei)
        );
    }
    h.push_str("</table>");
}

fn simulation(h: &mut String, r: &Report) {
    h.push_str("<h2>Flywheel simulation</h2>");
    match &r.simulation {
        Some(s) => {
            let _ = write!(
                h,
                "<p>Scenario <b>{}</b> with the chain's parameters ({}): <b>{}</b> after {} days, {} inferences. Results SHA-256 <code>{}</code>. Its report: <a href=\"{}\">{}</a>.</p><ul>",
                esc(&s.scenario),
                if s.from_chain { "from the chain's state" } else { "the chain's fee split and prices" },
                esc(&s.outcome),
                s.days,
                s.inferences,
                esc(&s.results_sha256),
                esc(&s.report),
                esc(&s.report)
            );
            for reason in &s.reasons {
                let _ = write!(h, "<li>{}</li>", esc(reason));
            }
            h.push_str("</ul>");
        }
        None => h.push_str("<p>Not run.</p>"),
    }
}
