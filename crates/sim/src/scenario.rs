//! Scenario files: the TOML that sets the horizon, the seed, the chain's governed parameters and
//! every agent population's behaviour parameters. Unknown keys are refused and every value is
//! range-checked, with errors that name the offending field (`contributors.activity must be
//! between 0 and 1, got 1.5`). Any numeric field can be overridden by its dotted path
//! ([`Scenario::with_value`]), which is what sweeps use.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// A whole scenario. Every section has defaults, so a file only lists what it changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// A label copied into the outputs.
    pub name: String,
    /// Simulated days (one block per day).
    pub days: u64,
    /// Seed of the run's random numbers: the same seed gives the same results.
    pub seed: u64,
    pub subsidy: Subsidy,
    pub chain: ChainParams,
    pub quality: Quality,
    pub contributors: Contributors,
    pub datanets: Datanets,
    pub builders: Builders,
    pub users: Users,
    pub stakers: Stakers,
    pub validators: Validators,
    pub governance: Governance,
    pub outcome: OutcomeRule,
    /// The chain state the run starts from (`sim run --from-chain`), absent for a fresh chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<crate::start::ChainStart>,
}

/// The bootstrapping subsidy: a foundation account funded at genesis (carved out of the
/// treasury's allocation) pays a bounty per accepted row until the subsidy window ends or the
/// fund is empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Subsidy {
    /// OPEN in the subsidy fund at genesis.
    pub initial_open: f64,
    /// OPEN paid per accepted row (quality-weighted rows are not used here: a row is a row).
    pub bounty_per_row_open: f64,
    /// Subsidies are paid on days `0..days` only.
    pub days: u64,
}

/// Governed chain parameters that differ from the chain's defaults (`Params::default()`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainParams {
    /// The contributors' share of inference fees, basis points.
    pub contributors_bps: u16,
    /// The model owner's share, basis points. Platform and stakers keep the chain's defaults;
    /// the four must sum to 10,000.
    pub model_owner_bps: u16,
    pub platform_bps: u16,
    pub stakers_bps: u16,
    /// Inference price per prompt token, OPEN.
    pub price_per_prompt_token_open: f64,
    /// Inference price per completion token, OPEN.
    pub price_per_completion_token_open: f64,
    /// Governor timing, in days (the chain's defaults: 1, 7, 1).
    pub voting_delay_days: u64,
    pub voting_period_days: u64,
    pub timelock_days: u64,
    /// Governor quorum in basis points of all votes.
    pub quorum_bps: u16,
}

/// The fitted data-to-quality curve: validation loss = `a + b · rows^(-c)` over accepted,
/// quality-weighted rows; model quality = `(base_loss - loss) / (base_loss - a)` clamped to
/// 0..1. The default is the fit `openledger sim calibrate` measured with ModelFactory on growing
/// subsets of a Datanet (`crate::quality::MEASURED`, also `scenarios/quality-smollm2.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quality {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    /// Validation loss of the base model without an adapter.
    pub base_loss: f64,
}

/// Contributors: arrive, submit rows when the expected reward covers their effort, churn when it
/// does not, reinvest a share of income as stake. Copiers resubmit others' rows (the datanet
/// module's duplicate guard must refuse them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Contributors {
    /// Most contributors active at once (arrivals stop at this many).
    pub max: u32,
    /// Contributors present at day 0.
    pub initial: u32,
    /// Mean arrivals per day when the expected reward equals the mean effort cost (scaled by
    /// that ratio, capped at twice).
    pub arrival_per_day: f64,
    /// Chance an active contributor submits on a day when it pays.
    pub activity: f64,
    pub rows_min: u64,
    pub rows_max: u64,
    /// Data quality per contribution: normal(mean, sd) clipped to 0..1.
    pub quality_mean: f64,
    pub quality_sd: f64,
    /// Mean effort cost of one contribution, OPEN; each contributor's is log-normal around it.
    pub effort_cost_open: f64,
    pub effort_cost_sigma: f64,
    /// Days of income a contributor counts a contribution to earn (its expected value is the
    /// datanet's recent income per approved contribution per day times this).
    pub payback_days: f64,
    /// Weight of the newest day in the exponential average of income (reaction to rewards).
    pub reaction: f64,
    /// Reward per contribution newcomers expect before any income was seen, OPEN.
    pub prior_reward_open: f64,
    /// Daily chance an active contributor whose expected reward is below its cost leaves.
    pub churn: f64,
    /// Share of income staked (once at least the chain's minimum stake has accumulated).
    pub reinvest_share: f64,
    /// Share of arrivals who are copiers.
    pub copier_share: f64,
    /// OPEN bought on the exchange at arrival (gas money).
    pub wallet_open: f64,
}

/// Datanets and their owners, who approve contributions at or above a quality bar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Datanets {
    pub count: u32,
    /// Contributions below this data quality (0..1) are rejected.
    pub min_quality: f64,
    /// Owner's OPEN (pays approval fees).
    pub owner_wallet_open: f64,
}

/// Model builders (one per datanet): train and register an adapter once the datanet holds
/// `min_rows` quality-weighted rows, retrain when it has grown by `retrain_growth`; serve it and
/// record each inference with its attribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Builders {
    pub min_rows: f64,
    pub retrain_growth: f64,
    /// OPEN paid to the compute provider per training.
    pub training_cost_open: f64,
    /// Contributions attributed per inference (at most the chain's `max_attributions`).
    pub attributions: u32,
    /// Share of the output attributed (the rest goes to the model owner).
    pub coverage: f64,
    pub wallet_open: f64,
}

/// App users: arrive and call the best adapter of their domain at a rate rising with its
/// quality and falling with the price.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Users {
    /// Most users active at once (the market's size).
    pub max: u32,
    pub initial: u32,
    /// Arrivals per day at quality 1 and the reference price.
    pub arrival_per_day: f64,
    /// Requests per active user per day at quality 1 and the reference price.
    pub requests_per_day: f64,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Demand scales with quality^quality_exponent ...
    pub quality_exponent: f64,
    /// ... and with (reference_price / price)^price_elasticity.
    pub price_elasticity: f64,
    /// Reference price of one request, OPEN.
    pub reference_price_open: f64,
    /// Daily chance of leaving, times (1 - quality).
    pub churn: f64,
    /// Inference credit bought per top-up, OPEN.
    pub deposit_open: f64,
}

/// Stakers: stake when the staking yield beats an outside rate, unstake when it falls below
/// half of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stakers {
    pub count: u32,
    pub wallet_open: f64,
    /// Annual outside rate (0.05 = 5%).
    pub outside_rate: f64,
    /// Share of free balance staked (or of stake unstaked) per decision.
    pub step: f64,
    /// Each staker decides every this many days.
    pub decide_every_days: u64,
}

/// RLHF validators (see `crate::rlhf`); none when `count` is 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Validators {
    pub count: u32,
    /// OPEN each stakes to join: at least the chain's `rlhf_min_stake`, plus a buffer, as a
    /// slash that takes it below the minimum makes it leave.
    pub stake_open: f64,
    /// OPEN each holds for gas.
    pub wallet_open: f64,
    /// Mean rounds opened per day (on that day's receipts).
    pub rounds_per_day: f64,
    /// Chance a validator rates a given round.
    pub participation: f64,
    /// Sd of an honest validator's score around the adapter's quality, basis points.
    pub noise_bps: f64,
    /// Share of validators that score at random.
    pub careless_share: f64,
    /// Chance a committed rating is never revealed.
    pub no_reveal: f64,
}

/// Governance voters: a council proposes "raise the contributors' share" through the real
/// governor when contributions stall; stakers vote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Governance {
    pub enabled: bool,
    /// The council's own stake, OPEN (must reach the proposal threshold).
    pub council_stake_open: f64,
    /// Compare contributions over this many days against the window before.
    pub window_days: u64,
    /// A drop by more than this share counts as a stall.
    pub stall_drop: f64,
    /// Basis points moved from the model owner's share to the contributors' per proposal.
    pub step_bps: u16,
    pub max_contributors_bps: u16,
    /// Chance each staker votes for.
    pub support: f64,
}

/// The take-off rule (see `classify`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutcomeRule {
    /// A series "grows" over the last quarter when the mean of its second half is at least
    /// (1 - tolerance) times the mean of its first half.
    pub tolerance: f64,
    /// Least mean daily approved contributions in the last quarter for a take-off.
    pub min_contributions_per_day: f64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "default".into(),
            days: 120,
            seed: 1,
            subsidy: Subsidy::default(),
            chain: ChainParams::default(),
            quality: Quality::default(),
            contributors: Contributors::default(),
            datanets: Datanets::default(),
            builders: Builders::default(),
            users: Users::default(),
            stakers: Stakers::default(),
            validators: Validators::default(),
            governance: Governance::default(),
            outcome: OutcomeRule::default(),
            start: None,
        }
    }
}

impl Default for Subsidy {
    fn default() -> Self {
        Subsidy {
            initial_open: 20_000.0,
            bounty_per_row_open: 0.05,
            days: 60,
        }
    }
}

impl Default for ChainParams {
    fn default() -> Self {
        ChainParams {
            contributors_bps: 5000,
            model_owner_bps: 3000,
            platform_bps: 1000,
            stakers_bps: 1000,
            price_per_prompt_token_open: 0.00001,
            price_per_completion_token_open: 0.00002,
            voting_delay_days: 1,
            voting_period_days: 7,
            timelock_days: 1,
            quorum_bps: 500,
        }
    }
}

impl Default for Quality {
    /// The measured fit ([`crate::quality::MEASURED`]).
    fn default() -> Self {
        crate::quality::MEASURED
    }
}

impl Default for Contributors {
    fn default() -> Self {
        Contributors {
            max: 2_000,
            initial: 20,
            arrival_per_day: 4.0,
            activity: 0.6,
            rows_min: 20,
            rows_max: 200,
            quality_mean: 0.7,
            quality_sd: 0.15,
            effort_cost_open: 1.0,
            effort_cost_sigma: 0.5,
            payback_days: 60.0,
            reaction: 0.3,
            prior_reward_open: 0.5,
            churn: 0.1,
            reinvest_share: 0.3,
            copier_share: 0.05,
            wallet_open: 2.0,
        }
    }
}

impl Default for Datanets {
    fn default() -> Self {
        Datanets {
            count: 3,
            min_quality: 0.4,
            owner_wallet_open: 10_000.0,
        }
    }
}

impl Default for Builders {
    fn default() -> Self {
        Builders {
            min_rows: 300.0,
            retrain_growth: 0.25,
            training_cost_open: 20.0,
            attributions: 8,
            coverage: 0.6,
            wallet_open: 1_000.0,
        }
    }
}

impl Default for Users {
    fn default() -> Self {
        Users {
            max: 3_000,
            initial: 20,
            arrival_per_day: 30.0,
            requests_per_day: 4.0,
            prompt_tokens: 300,
            completion_tokens: 200,
            quality_exponent: 2.0,
            price_elasticity: 1.0,
            reference_price_open: 0.007,
            churn: 0.1,
            deposit_open: 1.0,
        }
    }
}

impl Default for Stakers {
    fn default() -> Self {
        Stakers {
            count: 30,
            wallet_open: 5_000.0,
            outside_rate: 0.05,
            step: 0.25,
            decide_every_days: 7,
        }
    }
}

impl Default for Validators {
    fn default() -> Self {
        Validators {
            count: 0,
            stake_open: 1_500.0,
            wallet_open: 5.0,
            rounds_per_day: 3.0,
            participation: 0.8,
            noise_bps: 300.0,
            careless_share: 0.15,
            no_reveal: 0.01,
        }
    }
}

impl Default for Governance {
    fn default() -> Self {
        Governance {
            enabled: true,
            council_stake_open: 20_000.0,
            window_days: 14,
            stall_drop: 0.1,
            step_bps: 500,
            max_contributors_bps: 8000,
            support: 0.7,
        }
    }
}

impl Default for OutcomeRule {
    fn default() -> Self {
        OutcomeRule {
            tolerance: 0.02,
            min_contributions_per_day: 1.0,
        }
    }
}

/// A scenario file or value that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("scenario {path}: {message}")]
    Parse { path: String, message: String },
    #[error("scenario field {field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: &str, message: String) -> ScenarioError {
    ScenarioError::Invalid {
        field: field.into(),
        message,
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Parses and validates scenario TOML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let sc: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: origin.into(),
            message: e.to_string(),
        })?;
        sc.validate()?;
        Ok(sc)
    }

    /// This scenario with the numeric field at dotted `path` (e.g. `subsidy.initial_open`) set
    /// to `value`, validated. Integer fields take the value rounded.
    pub fn with_value(&self, path: &str, value: f64) -> Result<Scenario, ScenarioError> {
        let mut root = toml::Value::try_from(self).map_err(|e| invalid(path, e.to_string()))?;
        let mut node = &mut root;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let table = node
                .as_table_mut()
                .ok_or_else(|| invalid(path, "is not a scenario field".into()))?;
            let slot = table
                .get_mut(*part)
                .ok_or_else(|| invalid(path, format!("has no field {part:?}")))?;
            if i + 1 == parts.len() {
                *slot = match slot {
                    toml::Value::Float(_) => toml::Value::Float(value),
                    toml::Value::Integer(_) if value >= 0.0 && value.is_finite() => {
                        toml::Value::Integer(value.round() as i64)
                    }
                    toml::Value::Integer(_) => {
                        return Err(invalid(
                            path,
                            format!("must be a whole number >= 0, got {value}"),
                        ))
                    }
                    _ => return Err(invalid(path, "is not a numeric field".into())),
                };
                break;
            }
            node = slot;
        }
        let sc: Scenario = root
            .try_into()
            .map_err(|e: toml::de::Error| invalid(path, e.to_string()))?;
        sc.validate()?;
        Ok(sc)
    }

    /// Checks every value's range; the error names the field.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let unit = |field: &str, v: f64| -> Result<(), ScenarioError> {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(invalid(field, format!("must be between 0 and 1, got {v}")))
            }
        };
        let nonneg = |field: &str, v: f64| -> Result<(), ScenarioError> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!("must be a finite number >= 0, got {v}"),
                ))
            }
        };
        let positive = |field: &str, v: f64| -> Result<(), ScenarioError> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!("must be a finite number > 0, got {v}"),
                ))
            }
        };
        if self.days < 8 || self.days > 20 * 365 {
            return Err(invalid(
                "days",
                format!("must be between 8 and 7300, got {}", self.days),
            ));
        }
        nonneg("subsidy.initial_open", self.subsidy.initial_open)?;
        if self.subsidy.initial_open > 100_000_000.0 {
            return Err(invalid(
                "subsidy.initial_open",
                format!(
                    "must be at most 100,000,000 OPEN, got {}",
                    self.subsidy.initial_open
                ),
            ));
        }
        nonneg(
            "subsidy.bounty_per_row_open",
            self.subsidy.bounty_per_row_open,
        )?;
        let c = &self.chain;
        let sum = c.contributors_bps as u32
            + c.model_owner_bps as u32
            + c.platform_bps as u32
            + c.stakers_bps as u32;
        if sum != 10_000 {
            return Err(invalid(
                "chain.contributors_bps",
                format!("the four fee shares (contributors, model_owner, platform, stakers) must sum to 10000 bps, got {sum}"),
            ));
        }
        nonneg(
            "chain.price_per_prompt_token_open",
            c.price_per_prompt_token_open,
        )?;
        nonneg(
            "chain.price_per_completion_token_open",
            c.price_per_completion_token_open,
        )?;
        if c.price_per_prompt_token_open + c.price_per_completion_token_open <= 0.0 {
            return Err(invalid(
                "chain.price_per_completion_token_open",
                "a free inference pays nobody: at least one token price must be > 0".into(),
            ));
        }
        if c.voting_period_days == 0 {
            return Err(invalid(
                "chain.voting_period_days",
                "must be at least 1".into(),
            ));
        }
        if c.quorum_bps > 10_000 {
            return Err(invalid("chain.quorum_bps", "must be at most 10000".into()));
        }
        let q = &self.quality;
        positive("quality.b", q.b)?;
        positive("quality.c", q.c)?;
        nonneg("quality.a", q.a)?;
        if q.base_loss.partial_cmp(&q.a) != Some(std::cmp::Ordering::Greater) {
            return Err(invalid(
                "quality.base_loss",
                format!("must exceed quality.a ({}), got {}", q.a, q.base_loss),
            ));
        }
        let k = &self.contributors;
        if k.max == 0 || k.initial > k.max {
            return Err(invalid(
                "contributors.max",
                format!("must be >= 1 and >= contributors.initial ({})", k.initial),
            ));
        }
        nonneg("contributors.arrival_per_day", k.arrival_per_day)?;
        unit("contributors.activity", k.activity)?;
        if k.rows_min == 0 || k.rows_max < k.rows_min || k.rows_max > 1_000_000 {
            return Err(invalid(
                "contributors.rows_min",
                format!(
                    "need 1 <= rows_min <= rows_max <= 1000000, got {}..{}",
                    k.rows_min, k.rows_max
                ),
            ));
        }
        unit("contributors.quality_mean", k.quality_mean)?;
        nonneg("contributors.quality_sd", k.quality_sd)?;
        positive("contributors.effort_cost_open", k.effort_cost_open)?;
        nonneg("contributors.effort_cost_sigma", k.effort_cost_sigma)?;
        positive("contributors.payback_days", k.payback_days)?;
        unit("contributors.reaction", k.reaction)?;
        nonneg("contributors.prior_reward_open", k.prior_reward_open)?;
        unit("contributors.churn", k.churn)?;
        unit("contributors.reinvest_share", k.reinvest_share)?;
        unit("contributors.copier_share", k.copier_share)?;
        positive("contributors.wallet_open", k.wallet_open)?;
        if self.datanets.count == 0 || self.datanets.count > 1000 {
            return Err(invalid(
                "datanets.count",
                "must be between 1 and 1000".into(),
            ));
        }
        unit("datanets.min_quality", self.datanets.min_quality)?;
        positive(
            "datanets.owner_wallet_open",
            self.datanets.owner_wallet_open,
        )?;
        let b = &self.builders;
        nonneg("builders.min_rows", b.min_rows)?;
        nonneg("builders.retrain_growth", b.retrain_growth)?;
        nonneg("builders.training_cost_open", b.training_cost_open)?;
        if b.attributions == 0 || b.attributions > 32 {
            return Err(invalid(
                "builders.attributions",
                "must be between 1 and 32 (the chain's max_attributions)".into(),
            ));
        }
        unit("builders.coverage", b.coverage)?;
        positive("builders.wallet_open", b.wallet_open)?;
        let u = &self.users;
        if u.initial > u.max {
            return Err(invalid("users.initial", "must be at most users.max".into()));
        }
        nonneg("users.arrival_per_day", u.arrival_per_day)?;
        nonneg("users.requests_per_day", u.requests_per_day)?;
        if u.requests_per_day > 10_000.0 {
            return Err(invalid(
                "users.requests_per_day",
                "must be at most 10000".into(),
            ));
        }
        if u.prompt_tokens as u64 + u.completion_tokens as u64 == 0 {
            return Err(invalid(
                "users.completion_tokens",
                "a request needs tokens".into(),
            ));
        }
        nonneg("users.quality_exponent", u.quality_exponent)?;
        nonneg("users.price_elasticity", u.price_elasticity)?;
        positive("users.reference_price_open", u.reference_price_open)?;
        unit("users.churn", u.churn)?;
        positive("users.deposit_open", u.deposit_open)?;
        let s = &self.stakers;
        nonneg("stakers.wallet_open", s.wallet_open)?;
        nonneg("stakers.outside_rate", s.outside_rate)?;
        unit("stakers.step", s.step)?;
        if s.decide_every_days == 0 {
            return Err(invalid(
                "stakers.decide_every_days",
                "must be at least 1".into(),
            ));
        }
        let v = &self.validators;
        if v.count > 256 {
            return Err(invalid(
                "validators.count",
                format!("must be at most 256, got {}", v.count),
            ));
        }
        positive("validators.stake_open", v.stake_open)?;
        positive("validators.wallet_open", v.wallet_open)?;
        nonneg("validators.rounds_per_day", v.rounds_per_day)?;
        if v.rounds_per_day > 1_000.0 {
            return Err(invalid(
                "validators.rounds_per_day",
                "must be at most 1000".into(),
            ));
        }
        unit("validators.participation", v.participation)?;
        nonneg("validators.noise_bps", v.noise_bps)?;
        unit("validators.careless_share", v.careless_share)?;
        unit("validators.no_reveal", v.no_reveal)?;
        let g = &self.governance;
        nonneg("governance.council_stake_open", g.council_stake_open)?;
        if g.window_days == 0 {
            return Err(invalid(
                "governance.window_days",
                "must be at least 1".into(),
            ));
        }
        unit("governance.stall_drop", g.stall_drop)?;
        unit("governance.support", g.support)?;
        if g.max_contributors_bps > 10_000 - c.platform_bps - c.stakers_bps {
            return Err(invalid(
                "governance.max_contributors_bps",
                "must leave room for the platform and stakers shares".into(),
            ));
        }
        unit("outcome.tolerance", self.outcome.tolerance)?;
        nonneg(
            "outcome.min_contributions_per_day",
            self.outcome.min_contributions_per_day,
        )?;
        if let Some(s) = &self.start {
            s.validate()?;
        }
        Ok(())
    }
}
