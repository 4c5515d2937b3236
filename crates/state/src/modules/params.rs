//! Parameters: the governed parameter set, stored as JSON under the key `params`, and its views.

use crate::{error::ExecResult, kv::StateRead, Ctx, ExecError, StorageError};
use alloy_primitives::U256;
use alloy_sol_types::SolValue;
use openledger_types::{abi::IParams, modules::TREASURY, Params};

/// Key of the parameter set.
pub const KEY: &[u8] = b"params";

/// Reads the parameters in force.
pub fn load(state: &dyn StateRead) -> Result<Params, StorageError> {
    let raw = state
        .get(KEY)?
        .ok_or_else(|| StorageError("state has no parameters: was genesis applied?".into()))?;
    serde_json::from_slice(&raw).map_err(|e| StorageError(format!("corrupt parameters: {e}")))
}

/// Encodes parameters for storage.
pub fn encode(params: &Params) -> Vec<u8> {
    serde_json::to_vec(params).expect("params serialize")
}

/// Executes a params view.
pub fn call(ctx: &mut Ctx, call: IParams::IParamsCalls) -> ExecResult<Vec<u8>> {
    use IParams::IParamsCalls as C;
    let p = ctx.params;
    Ok(match call {
        C::feeSplit(_) => IParams::FeeSplit {
            platformBps: p.fee_split.platform_bps,
            modelOwnerBps: p.fee_split.model_owner_bps,
            stakersBps: p.fee_split.stakers_bps,
            contributorsBps: p.fee_split.contributors_bps,
        }
        .abi_encode(),
        C::minGasPrice(_) => U256::from(p.min_gas_price_wei).abi_encode(),
        C::callGas(c) => match p.call_gas.get(&c.name) {
            Some(g) => g.abi_encode(),
            None => {
                return Err(ExecError::NotFound(format!(
                    "gas schedule entry {:?}",
                    c.name
                )))
            }
        },
        C::paramsJson(_) => String::from_utf8(encode(p))
            .expect("json is utf-8")
            .abi_encode(),
        C::treasury(_) => TREASURY.abi_encode(),
    })
}
