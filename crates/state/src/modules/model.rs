//! Models: base models (by content hash) and adapters with their provenance — the base model,
//! the datanet versions (and their roots) they were trained on, the training-config hash, the
//! adapter blob hash and the attribution-index root.
//!
//! Keys: `m/n` → base model count; `m/b`++id → `BaseModel`; `m/h`++hash → id;
//! `m/a` → adapter count; `m/A`++id → `Adapter`.

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
            if c.name.trim().is_empty() || c.adapterHash.is_zero() {
                return Err(ExecError::Invalid(
                    "an adapter needs a name and a non-zero adapter hash".into(),
                ));
            }
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
            let id = codec::next_id(&mut ctx.state, b"m/a")?;
            let a = Adapter {
                id,
                baseModelId: c.baseModelId,
                owner: ctx.sender,
                name: c.name,
                datanetIds: c.datanetIds,
                datanetVersions: c.datanetVersions,
                datanetRoots: roots,
                trainingConfigHash: c.trainingConfigHash,
                adapterHash: c.adapterHash,
                attributionIndexRoot: c.attributionIndexRoot,
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
            IModel::registerAdapterCall::abi_encode_returns(&id)
        }
        C::getBaseModel(c) => base_model(&ctx.state, c.modelId)?.abi_encode(),
        C::getAdapter(c) => adapter(&ctx.state, c.adapterId)?.abi_encode(),
        C::baseModelCount(_) => codec::get_u64(&ctx.state, b"m/n")?.abi_encode(),
        C::adapterCount(_) => codec::get_u64(&ctx.state, b"m/a")?.abi_encode(),
    })
}
