//! The self-contained HTML report of a run, sweep or threshold search: the scenario, what was
//! run, the classification rule and the result, the threshold with its confidence interval, the
//! plots (inline SVG), and the results hash with how to verify it. No scripts, no external
//! assets: one file that opens anywhere.

use crate::{
    evidence::{Computed, Evidence, Job},
    report::Summary,
    sweep::{Point, Threshold},
};
use std::fmt::Write;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The classification rule in words, with the scenario's tolerance and floor filled in.
pub fn rule(ev: &Evidence) -> String {
    let o = &ev.scenario.outcome;
    format!(
        "Over the last quarter of the horizon, split in two halves, a run takes off when (1) no \
         subsidy was paid in that quarter, (2) approved contributions, inferences and contributor \
         income per day each grow: the second half's mean is positive and at least {:.0}% of the \
         first half's (tolerance {}), and (3) the quarter averages at least {} approved \
         contributions per day. Anything else is a stall. The threshold is the least value at \
         which at least half of the seeds take off (bisection, assuming take-off is monotone in \
         the parameter), with a 95% Wilson interval of the take-off probability there.",
        (1.0 - o.tolerance) * 100.0,
        o.tolerance,
        o.min_contributions_per_day
    )
}

/// The report page. `plots` are (caption, SVG text) pairs, inlined in order.
pub fn page(ev: &Evidence, computed: &Computed, plots: &[(String, String)]) -> String {
    let sc = &ev.scenario;
    let mut h = String::new();
    let kind = match &ev.job {
        Job::Run => "run".to_string(),
        Job::Sweep { x, y, seeds } => match y {
            Some(y) => format!("sweep of {} × {} over {seeds} seeds", x.param, y.param),
            None => format!("sweep of {} over {seeds} seeds", x.param),
        },
        Job::Threshold { param, .. } => format!("threshold search on {param}"),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{name}: {kind}</title><style>{CSS}</style></head><body>\n\
         <h1>Flywheel simulation: {name}</h1>\n<p>{kind}; {days} simulated days; seeds {seeds}.</p>\n",
        name = esc(&sc.name),
        kind = esc(&kind),
        days = sc.days,
        seeds = esc(&seed_list(&ev.seeds)),
    );
    h.push_str("<h2>Result</h2>\n");
    match computed {
        Computed::Run { summary, .. } => run_result(&mut h, summary),
        Computed::Sweep(g) => sweep_result(&mut h, &ev.job, &g.points),
        Computed::Threshold(t) => threshold_result(&mut h, t),
    }
    let _ = write!(
        h,
        "<h2>Classification rule</h2>\n<p>{}</p>\n",
        esc(&rule(ev))
    );
    for (caption, svg) in plots {
        let svg = svg
            .trim_start()
            .strip_prefix("<?xml")
            .and_then(|s| s.split_once("?>").map(|x| x.1))
            .unwrap_or(svg);
        let _ = write!(h, "<h2>{}</h2>\n<figure>{svg}</figure>\n", esc(caption));
    }
    // A chain state can be large: the page names it; report.json holds it whole.
    let mut shown = sc.clone();
    let start = shown.start.take().map(|s| {
        format!(
            "# started from {} (read from {}; in full in report.json)\n",
            s.describe(),
            s.source
        )
    });
    let toml = start.unwrap_or_default()
        + &toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("(not printable: {e})"));
    let _ = write!(
        h,
        "<h2>Scenario</h2>\n<pre>{}</pre>\n<h2>Evidence</h2>\n<p>Results hash <code>{}</code>. \
         <code>openledger sim verify report.json</code> re-runs this job from the scenario and \
         seeds recorded in <code>report.json</code> and checks the hash; \
         <code>openledger gov propose … --evidence report.json</code> records the report file's \
         SHA-256 in the proposal.</p>\n</body></html>\n",
        esc(&toml),
        esc(&ev.results_sha256)
    );
    h
}

const CSS: &str = "body{font-family:sans-serif;max-width:1240px;margin:1em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}\
th{background:#f3f3f3}pre{background:#f7f7f7;padding:8px;overflow:auto}\
.up{color:#1a7f37;font-weight:bold}.down{color:#b42318;font-weight:bold}figure{margin:0}svg{max-width:100%;height:auto}";

fn seed_list(seeds: &[u64]) -> String {
    match seeds {
        [] => "none".into(),
        [s] => s.to_string(),
        [first, .., last] if seeds.len() > 2 => format!("{first}..={last}"),
        _ => seeds
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn run_result(h: &mut String, s: &Summary) {
    let o = &s.outcome;
    let class = if o.take_off { "up" } else { "down" };
    let _ = writeln!(h, "<p class=\"{class}\">{}</p>", esc(&o.label));
    if !o.reasons.is_empty() {
        h.push_str("<ul>");
        for r in &o.reasons {
            let _ = write!(h, "<li>{}</li>", esc(r));
        }
        h.push_str("</ul>\n");
    }
    h.push_str(
        "<table><tr><th>last quarter, per day</th><th>first half</th><th>second half</th><th>grows</th></tr>",
    );
    for (name, t) in [
        ("approved contributions", &o.contributions),
        ("inferences", &o.inferences),
        ("contributor income, OPEN", &o.contributor_income),
    ] {
        let _ = write!(
            h,
            "<tr><td>{name}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td></tr>",
            t.first_half_mean,
            t.second_half_mean,
            if t.grows { "yes" } else { "no" }
        );
    }
    let t = &s.totals;
    let _ = write!(
        h,
        "</table>\n<p>Totals: {} contributions approved, {} duplicates refused, {} inferences, \
         {:.2} OPEN fees, {:.2} OPEN to contributors, {:.2} OPEN subsidies, {} adapters trained; \
         {} transactions accepted, {} refused. Supply check: {}. State digest <code>{}</code>.</p>\n",
        t.contributions_approved,
        t.duplicates_refused,
        t.inferences,
        t.fees_open,
        t.contributor_income_open,
        t.subsidy_paid_open,
        t.adapters_trained,
        s.transactions_accepted,
        s.transactions_refused,
        if s.supply_check.ok { "passed" } else { "FAILED" },
        esc(&s.state_digest)
    );
    if let Some(r) = &s.rlhf {
        let _ = writeln!(
            h,
            "<p>RLHF validators: {} ({} careless), {} still in the set; {} rounds opened, {} counted, \
             {} void; {:.4} OPEN rewards, {:.4} OPEN slashed, {:.4} OPEN left in the pool. Mean net \
             income per honest validator {:.4} OPEN, per careless one {:.4} OPEN; slashes for deviating: \
             {} of honest and {} of careless validators, {} for never revealing.</p>",
            r.validators,
            r.careless,
            r.active_at_end,
            r.rounds_opened,
            r.rounds_counted,
            r.rounds_void,
            r.rewards_open,
            r.slashed_open,
            r.pool_open,
            r.honest_net_open,
            r.careless_net_open,
            r.honest_deviations,
            r.careless_deviations,
            r.silences
        );
    }
    if !s.governance.is_empty() {
        h.push_str("<p>Governance:</p><ul>");
        for g in &s.governance {
            let _ = write!(h, "<li>day {}: {}</li>", g.day, esc(&g.what));
        }
        h.push_str("</ul>\n");
    }
}

fn sweep_result(h: &mut String, job: &Job, points: &[Point]) {
    let (xp, yp) = match job {
        Job::Sweep { x, y, .. } => (x.param.clone(), y.as_ref().map(|y| y.param.clone())),
        _ => (String::new(), None),
    };
    let _ = write!(h, "<table><tr><th>{}</th>", esc(&xp));
    if let Some(y) = &yp {
        let _ = write!(h, "<th>{}</th>", esc(y));
    }
    h.push_str("<th>take-offs / runs</th><th>share</th><th>95% CI</th></tr>\n");
    for p in points {
        let _ = write!(h, "<tr><td>{}</td>", p.value);
        if let Some(v) = p.value2 {
            let _ = write!(h, "<td>{v}</td>");
        }
        let _ = writeln!(
            h,
            "<td>{}/{}</td><td>{:.2}</td><td>{:.2}..{:.2}</td></tr>",
            p.take_offs, p.runs, p.share, p.ci_low, p.ci_high
        );
    }
    h.push_str("</table>\n");
}

fn threshold_result(h: &mut String, t: &Threshold) {
    match &t.note {
        Some(n) => {
            let _ = writeln!(
                h,
                "<p class=\"down\">No threshold bracketed: {}.</p>",
                esc(n)
            );
        }
        None => {
            let _ = writeln!(
                h,
                "<p class=\"up\">Bootstrapping threshold of {}: {:.4} (between {:.4} and {:.4}); \
                 {}/{} seeds take off there, 95% CI of the take-off probability {:.2}..{:.2}.</p>",
                esc(&t.param),
                t.threshold,
                t.below,
                t.threshold,
                t.take_offs,
                t.runs,
                t.ci_low,
                t.ci_high
            );
        }
    }
    let _ = write!(
        h,
        "<table><tr><th>{} tried</th><th>take-offs / runs</th></tr>",
        esc(&t.param)
    );
    for (v, k, n) in &t.tried {
        let _ = write!(h, "<tr><td>{v:.4}</td><td>{k}/{n}</td></tr>");
    }
    h.push_str("</table>\n");
}
