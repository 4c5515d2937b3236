//! Models: base models (by content hash) and adapters with their provenance — the base model,
//! the datanet versions (and their roots) they were trained on, the training-config hash, the
//! adapter blob hash and the attribution-index root.
//!
//! Adapter names are unique, so the OpenAI API can name an adapter by name; merged adapters
//! record their parents and inherit their datanet versions, so those contributors keep earning
//! (inheriting a permissioned datanet needs the access training on it needs).
//!
//! Keys: `m/n` → base model count; `m/b`++id → `BaseModel`; `m/h`++hash → id;
//! `m/a` → adapter count; `m/A`++id → `Adapter`; `m/N`++name → adapter id;
//! `m/P`++id → parent ids (ABI `uint64[]`) of a merged adapter. Model proposals with bounties
//! live in [`proposals`] (keys `m/q`, `m/Q`).

pub mod proposals;

use crate::{codec, error::ExecResult, kv::StateRead, modules::datanet, Ctx, ExecError};
use alloy_sol_types::{SolCall, SolValue};
use openledger_types::{
    abi::IModel::{self, Adapter, BaseModel},
    modules::MODEL,
};

fn k(prefix: &[u8], id: u64) -> Vec<u8> {
    codec::key(&[prefix, &id.to_be_bytes()])
}

/// Reads a base model.
pub fn base_model(state: &dyn StateRead, id: u64) -> ExecResult<BaseModel> {
    codec::get_sol::<BaseModel>(state, &k(b"m/b", id))?
        .ok_or_else(|| ExecError::NotFound(format!("base model {id}")))
}

/// Reads an adapter.
pub fn adapter(state: &dyn StateRead, id: u64) -> ExecResult<Adapter> {
    codec::get_sol::<Adapter>(state, &k(b"m/A", id))?
        .ok_or_else(|| ExecError::NotFound(format!("adapter {id}")))
}

/// Longest adapter name.
pub const MAX_ADAPTER_NAME: usize = 128;

/// Checks an adapter name: 1 to 128 of A-Z a-z 0-9 - _ . , not all digits and not of the form
/// `adapter-<digits>` (those name adapters by id).
pub fn check_adapter_name(name: &str) -> ExecResult<()> {
    let charset = !name.is_empty()
        && name.len() <= MAX_ADAPTER_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let id_like = digits(name) || name.strip_prefix("adapter-").is_some_and(digits);
    if !charset || id_like {
        return Err(ExecError::Invalid(format!(
            "adapter name {name:?}: use 1 to {MAX_ADAPTER_NAME} characters of A-Z a-z 0-9 - _ . \
             (not all digits, not adapter-<number>)"
        )));
    }
    Ok(())
}

/// The adapter registered under `name`, if any.
pub fn adapter_by_name(state: &dyn StateRead, name: &str) -> ExecResult<Option<u64>> {
    Ok(state
        .get(&codec::key(&[b"m/N", name.as_bytes()]))?
        .map(|v| u64::from_be_bytes(v.as_slice().try_into().unwrap_or_default())))
}

/// The parents of a merged adapter (empty for a trained one).
pub fn parents(state: &dyn StateRead, id: u64) -> ExecResult<Vec<u64>> {
    Ok(codec::get_sol::<Vec<u64>>(state, &k(b"m/P", id))?.unwrap_or_default())
}

/// What an adapter registration records besides the derived fields.
struct NewAdapter {
    base: u64,
    name: String,
    datanet_ids: Vec<u64>,
    datanet_versions: Vec<u64>,
    roots: Vec<alloy_primitives::B256>,
    config_hash: alloy_primitives::B256,
    adapter_hash: alloy_primitives::B256,
    index_root: alloy_primitives::B256,
}

fn register(ctx: &mut Ctx, n: NewAdapter) -> ExecResult<u64> {
    if n.adapter_hash.is_zero() {
        return Err(ExecError::Invalid(
            "an adapter needs a non-zero adapter hash (the content hash of its weights)".into(),
        ));
    }
    check_adapter_name(&n.name)?;
    if let Some(other) = adapter_by_name(&ctx.state, &n.name)? {
        return Err(ExecError::Invalid(format!(
            "the adapter name {:?} is taken by adapter {other}; pick another",
            n.name
        )));
    }
    let id = codec::next_id(&mut ctx.state, b"m/a")?;
    ctx.state.put(
        codec::key(&[b"m/N", n.name.as_bytes()]),
        id.to_be_bytes().to_vec(),
    );
    let a = Adapter {
        id,
        baseModelId: n.base,
        owner: ctx.sender,
        name: n.name,
        datanetIds: n.datanet_ids,
        datanetVersions: n.datanet_versions,
        datanetRoots: n.roots,
        trainingConfigHash: n.config_hash,
        adapterHash: n.adapter_hash,
        attributionIndexRoot: n.index_root,
        registeredAt: ctx.env.timestamp,
    };
    codec::put_sol(&mut ctx.state, k(b"m/A", id), &a);
    ctx.emit(
        MODEL,
        &IModel::AdapterRegistered {
            adapterId: id,
            baseModelId: a.baseModelId,
            owner: a.owner,
            adapterHash: a.adapterHash,
            trainingConfigHash: a.trainingConfigHash,
            attributionIndexRoot: a.attributionIndexRoot,
        },
    );
    Ok(id)
}

fn register_merged(ctx: &mut Ctx, c: IModel::registerMergedAdapterCall) -> ExecResult<u64> {
    if c.parentIds.len() < 2 || c.parentIds.len() > ctx.params.max_attributions as usize {
        return Err(ExecError::Invalid(format!(
            "a merged adapter has 2 to {} parents, got {}",
            ctx.params.max_attributions,
            c.parentIds.len()
        )));
    }
    let mut base = None;
    let (mut ids, mut versions, mut roots) = (Vec::new(), Vec::new(), Vec::new());
    let mut index_root = alloy_primitives::B256::ZERO;
    for (i, &p) in c.parentIds.iter().enumerate() {
        if c.parentIds[..i].contains(&p) {
            return Err(ExecError::Invalid(format!(
                "parent adapter {p} is listed twice"
            )));
        }
        let a = adapter(&ctx.state, p)?;
        if *base.get_or_insert(a.baseModelId) != a.baseModelId {
            return Err(ExecError::Invalid(format!(
                "parent adapter {p} is built on base model {}, not {}: merges need one base",
                a.baseModelId,
                base.unwrap_or_default()
            )));
        }
        if i == 0 {
            index_root = a.attributionIndexRoot;
        }
        for ((&d, &v), &r) in a
            .datanetIds
            .iter()
            .zip(&a.datanetVersions)
            .zip(&a.datanetRoots)
        {
            match ids.iter().position(|&x| x == d) {
                // The latest version of a datanet any parent used covers the earlier ones.
                Some(j) if versions[j] < v => {
                    versions[j] = v;
                    roots[j] = r;
                }
                Some(_) => {}
                None => {
                    ids.push(d);
                    versions.push(v);
                    roots.push(r);
                }
            }
        }
    }
    if ids.len() > ctx.params.max_attributions as usize {
        return Err(ExecError::Invalid(format!(
            "the parents span {} datanets; an adapter lists at most {}",
            ids.len(),
            ctx.params.max_attributions
        )));
    }
    // Inheriting a datanet claims training on it: the access `registerAdapter` asks for.
    for &d_id in &ids {
        let d = datanet::datanet(&ctx.state, d_id)?;
        if !datanet::has_access(&ctx.state, &d, &ctx.sender)? {
            return Err(ExecError::Unauthorized(format!(
                "the parents were trained on datanet {d_id}, which is permissioned, and {} has no access grant to it",
                ctx.sender
            )));
        }
    }
    let id = register(
        ctx,
        NewAdapter {
            base: base.unwrap_or_default(),
            name: c.name,
            datanet_ids: ids,
            datanet_versions: versions,
            roots,
            config_hash: c.mergeConfigHash,
            adapter_hash: c.adapterHash,
            index_root,
        },
    )?;
    codec::put_sol(&mut ctx.state, k(b"m/P", id), &c.parentIds);
    ctx.emit(
        MODEL,
        &IModel::AdapterMerged {
            adapterId: id,
            parentIds: c.parentIds,
            mergeConfigHash: c.mergeConfigHash,
        },
    );
    Ok(id)
}

/// Executes a model call.
pub fn call(ctx: &mut Ctx, call: IModel::IModelCalls) -> ExecResult<Vec<u8>> {
    use IModel::IModelCalls as C;
    Ok(match call {
        C::registerBaseModel(c) => {
            if c.modelHash.is_zero() || c.name.trim().is_empty() {
                return Err(ExecError::Invalid(
                    "a base model needs a non-zero hash and a name".into(),
                ));
            }
            ctx.check_len("name", &c.name)?;
            let hkey = codec::key(&[b"m/h", c.modelHash.as_slice()]);
            if let Some(id) = ctx.state.get(&hkey)? {
                let id = u64::from_be_bytes(id.as_slice().try_into().unwrap_or_default());
                return Err(ExecError::Invalid(format!(
                    "model hash {} is already registered as base model {id}",
                    c.modelHash
                )));
            }
            let id = codec::next_id(&mut ctx.state, b"m/n")?;
            ctx.state.put(hkey, id.to_be_bytes().to_vec());
            let m = BaseModel {
                id,
                owner: ctx.sender,
                modelHash: c.modelHash,
                name: c.name,
                registeredAt: ctx.env.timestamp,
            };
            codec::put_sol(&mut ctx.state, k(b"m/b", id), &m);
            ctx.emit(
                MODEL,
                &IModel::BaseModelRegistered {
                    modelId: id,
                    owner: m.owner,
                    modelHash: m.modelHash,
                    name: m.name,
                },
            );
            IModel::registerBaseModelCall::abi_encode_returns(&id)
        }
        C::registerAdapter(c) => {
            base_model(&ctx.state, c.baseModelId)?;
            ctx.check_len("name", &c.name)?;
            if c.datanetIds.is_empty() || c.datanetIds.len() != c.datanetVersions.len() {
                return Err(ExecError::Invalid(format!(
                    "an adapter needs at least one datanet, with one version per datanet ({} ids, {} versions)",
                    c.datanetIds.len(),
                    c.datanetVersions.len()
                )));
            }
            if c.datanetIds.len() > ctx.params.max_attributions as usize {
                return Err(ExecError::Invalid(format!(
                    "at most {} datanets per adapter",
                    ctx.params.max_attributions
                )));
            }
            let mut roots = Vec::with_capacity(c.datanetIds.len());
            for (i, (&d_id, &v)) in c.datanetIds.iter().zip(&c.datanetVersions).enumerate() {
                if c.datanetIds[..i].contains(&d_id) {
                    return Err(ExecError::Invalid(format!(
                        "datanet {d_id} is listed twice"
                    )));
                }
                let d = datanet::datanet(&ctx.state, d_id)?;
                if !datanet::has_access(&ctx.state, &d, &ctx.sender)? {
                    return Err(ExecError::Unauthorized(format!(
                        "datanet {d_id} is permissioned and {} has no access grant to train on it",
                        ctx.sender
                    )));
                }
                roots.push(datanet::version(&ctx.state, d_id, v)?.root);
            }
            let id = register(
                ctx,
                NewAdapter {
                    base: c.baseModelId,
                    name: c.name,
                    datanet_ids: c.datanetIds,
                    datanet_versions: c.datanetVersions,
                    roots,
                    config_hash: c.trainingConfigHash,
                    adapter_hash: c.adapterHash,
                    index_root: c.attributionIndexRoot,
                },
            )?;
            IModel::registerAdapterCall::abi_encode_returns(&id)
        }
        C::registerMergedAdapter(c) => {
            ctx.check_len("name", &c.name)?;
            IModel::registerMergedAdapterCall::abi_encode_returns(&register_merged(ctx, c)?)
        }
        C::proposeModel(c) => {
            IModel::proposeModelCall::abi_encode_returns(&proposals::propose(ctx, c)?)
        }
        C::approveModelProposal(c) => {
            proposals::approve(ctx, c)?;
            Vec::new()
        }
        C::claimModelBounty(c) => {
            proposals::claim(ctx, c)?;
            Vec::new()
        }
        C::expireModelProposal(c) => {
            proposals::expire(ctx, c)?;
            Vec::new()
        }
        C::getModelProposal(c) => proposals::proposal(&ctx.state, c.proposalId)?.abi_encode(),
        C::modelProposalCount(_) => proposals::count(&ctx.state)?.abi_encode(),
        C::adapterByName(c) => adapter_by_name(&ctx.state, &c.name)?
            .unwrap_or_default()
            .abi_encode(),
        C::parentsOf(c) => {
            adapter(&ctx.state, c.adapterId)?;
            parents(&ctx.state, c.adapterId)?.abi_encode()
        }
        C::getBaseModel(c) => base_model(&ctx.state, c.modelId)?.abi_encode(),
        C::getAdapter(c) => adapter(&ctx.state, c.adapterId)?.abi_encode(),
        C::baseModelCount(_) => codec::get_u64(&ctx.state, b"m/n")?.abi_encode(),
        C::adapterCount(_) => codec::get_u64(&ctx.state, b"m/a")?.abi_encode(),
    })
}
