//! OpenLoRA's ledger side: what the serving crate needs from the chain, with plain APIs so the
//! node stays free of the model runtime (the CLI glues this to `openledger-serve`).
//!
//! - [`artifacts`]: the content-addressed artifact store (`<dir>/artifacts/<blake3 hex>`), its
//!   signed upload route, attribution indexes materialised from uploaded files, and adapter
//!   resolution: the OpenAI `model` field → the on-chain adapter → its verified, unpacked PEFT
//!   directory ([`OpenLora::resolve_adapter`], [`OpenLora::chain_adapters`]).
//! - [`bundle`]: the one-file adapter bundle whose BLAKE3 is the on-chain `adapterHash` (shared
//!   with the CLI, which packs it).
//! - API keys, billing and receipts: see the payments section of [`OpenLora`].
//!
//! Routes ([`router`]): `POST /v1/artifacts`, `GET /v1/artifacts/{hash}`, `POST /v1/indexes`
//! (and the payments routes).

pub mod artifacts;
pub mod bundle;
// Payments: API keys bound to accounts, billing (reservations, charges), the receipt journal
// and the recorder that puts receipts on chain.
pub mod api_keys;
pub mod billing;
pub mod receipts;
pub mod recorder;

pub use artifacts::{ArtifactLimits, ResolvedAdapter};
pub use billing::{PaymentLimits, Reservation};
pub use receipts::ServedInference;
pub use recorder::RecordStats;

use crate::{datanets::ApiError, sequencer::Node};
use alloy_primitives::{Address, B256};
use alloy_signer_local::PrivateKeySigner;
use axum::{http::request::Parts, Router};
use openledger_types::request_auth;
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

/// OpenLoRA's shared state: one per node, behind an `Arc`.
pub struct OpenLora {
    /// The node whose chain this reads and whose guards the routes share.
    pub node: Arc<Node>,
    /// `<home>/data/openlora`.
    pub dir: PathBuf,
    /// The on-chain `modelHash` of the base model being served; adapters of another base model
    /// are refused. `None`: no model served, adapters of every base model resolve.
    pub served_model_hash: Option<B256>,
    /// Artifacts, indexes and unpacked adapters ([`artifacts`]).
    pub artifacts: artifacts::Artifacts,
    // ---- payments helper: its fields go below (api keys, billing, receipts). ----
    /// The operator key that signs `recordInferences` batches; `None`: billing is off.
    pub operator_key: Option<PrivateKeySigner>,
    /// API keys, holds on callers' credit, the receipt journal ([`billing`], [`receipts`]).
    pub payments: billing::Payments,
}

impl OpenLora {
    /// Opens OpenLoRA's state in `dir` (`<home>/data/openlora`, created if missing) with the
    /// default artifact limits.
    pub fn open(
        node: Arc<Node>,
        dir: &Path,
        operator: Option<PrivateKeySigner>,
        served_model_hash: Option<B256>,
    ) -> Result<Arc<OpenLora>, String> {
        Self::open_with(
            node,
            dir,
            operator,
            served_model_hash,
            ArtifactLimits::default(),
        )
    }

    /// [`OpenLora::open`] with other artifact limits.
    pub fn open_with(
        node: Arc<Node>,
        dir: &Path,
        operator: Option<PrivateKeySigner>,
        served_model_hash: Option<B256>,
        limits: ArtifactLimits,
    ) -> Result<Arc<OpenLora>, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("creating the OpenLoRA directory {}: {e}", dir.display()))?;
        let artifacts = artifacts::Artifacts::open(dir, limits)?;
        let payments = billing::Payments::open(&node, dir, operator.as_ref().map(|k| k.address()))?;
        Ok(Arc::new(OpenLora {
            node,
            dir: dir.to_path_buf(),
            served_model_hash,
            artifacts,
            operator_key: operator,
            payments,
        }))
    }
}

impl OpenLora {
    /// Whether `owner` stakes at least the governed `pin_min_stake`: its adapters stay in RAM.
    pub fn owner_stake_pins(&self, owner: &Address) -> Result<bool, String> {
        let chain = self.node.chain();
        let min = chain.params().map_err(|e| e.to_string())?.pin_min_stake;
        chain
            .with_pending_state(|s| openledger_state::modules::staking::stake_of(s, owner))
            .map(|stake| stake >= min)
            .map_err(|e| format!("reading {owner}'s stake: {e}"))
    }
}

/// OpenLoRA's HTTP routes, with their state inside (merge them next to the OpenAI routes; the
/// node's Host/Origin guards and body limits wrap merged routers).
pub fn router(o: Arc<OpenLora>) -> Router {
    Router::new()
        .merge(artifacts::routes())
        .merge(billing::routes())
        .with_state(o)
}

/// Checks a signed request (`openledger_types::request_auth`) and remembers it against replay
/// with the node's guards; the caller compares the body with [`request_auth::Signed::body_hash`].
/// Unsigned (`what` says what needs the signature), a bad signature or a replay: 401.
pub fn signed_request(
    parts: &Parts,
    node: &Node,
    what: &str,
) -> Result<request_auth::Signed, ApiError> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::Unauthorized(format!(
                "{what} needs a signed request: name your key with --from (openledger --from KEY ...)"
            ))
        })?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?;
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or(parts.uri.path());
    let t = crate::sequencer::now();
    let signed = request_auth::verify(value, node.chain_id(), parts.method.as_str(), pq, t)
        .map_err(ApiError::Unauthorized)?;
    node.datanets.guards(&node.config.staging).replay.remember(
        signed.replay_key,
        signed.address,
        signed.time,
        t,
    )?;
    Ok(signed)
}

/// The address of a signed request, for handlers that only need who asks.
pub fn signer_of(parts: &Parts, node: &Node, what: &str) -> Result<Address, ApiError> {
    signed_request(parts, node, what).map(|s| s.address)
}
