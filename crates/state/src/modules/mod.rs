//! The native modules. Each owns a key prefix, its calls (mutating and views, decoded from the
//! Solidity ABI of `contracts/`), and its events. [`dispatch`] routes a call to its module.

pub mod agent;
pub mod bank;
pub mod datanet;
pub mod governor;
pub mod inference;
pub mod model;
pub mod params;
pub mod rlhf;
pub mod staking;

use crate::{error::ExecResult, Ctx, ExecError};
use alloy_primitives::Address;
use alloy_sol_types::SolInterface;
use openledger_types::{abi, modules as addr};

/// Functions that accept OPEN with the call.
const PAYABLE: [&str; 5] = [
    "stake",
    "deposit",
    "stakeAgent",
    "fundRewards",
    "proposeModel",
];

/// The function name a call selects, if `to` is a module and the selector is known.
pub fn function_name(to: &Address, data: &[u8]) -> Option<&'static str> {
    let sel: [u8; 4] = data.get(..4)?.try_into().ok()?;
    match *to {
        addr::BANK => abi::IBank::IBankCalls::name_by_selector(sel),
        addr::STAKING => abi::IStaking::IStakingCalls::name_by_selector(sel),
        addr::DATANET => abi::IDatanet::IDatanetCalls::name_by_selector(sel),
        addr::MODEL => abi::IModel::IModelCalls::name_by_selector(sel),
        addr::INFERENCE => abi::IInference::IInferenceCalls::name_by_selector(sel),
        addr::PARAMS => abi::IParams::IParamsCalls::name_by_selector(sel),
        addr::GOVERNOR => abi::IGovernor::IGovernorCalls::name_by_selector(sel),
        addr::RLHF => abi::IRlhf::IRlhfCalls::name_by_selector(sel),
        addr::AGENT => abi::IAgent::IAgentCalls::name_by_selector(sel),
        _ => None,
    }
}

/// Decodes calldata for module `module`, telling an unknown selector from malformed arguments.
pub fn decode<C: SolInterface>(module: &'static str, data: &[u8]) -> ExecResult<C> {
    let sel: [u8; 4] = data
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| ExecError::MalformedAbi {
            module,
            reason: format!(
                "calldata is {} bytes, shorter than a 4-byte selector",
                data.len()
            ),
        })?;
    if !C::valid_selector(sel) {
        return Err(ExecError::UnknownSelector {
            module,
            selector: sel.iter().map(|b| format!("{b:02x}")).collect(),
        });
    }
    C::abi_decode_validate(data).map_err(|e| ExecError::MalformedAbi {
        module,
        reason: e.to_string(),
    })
}

/// Checks that calldata decodes for its module, without executing (admission check).
pub fn check_calldata(to: &Address, data: &[u8]) -> ExecResult<()> {
    match *to {
        addr::BANK => decode::<abi::IBank::IBankCalls>("bank", data).map(drop),
        addr::STAKING => decode::<abi::IStaking::IStakingCalls>("staking", data).map(drop),
        addr::DATANET => decode::<abi::IDatanet::IDatanetCalls>("datanet", data).map(drop),
        addr::MODEL => decode::<abi::IModel::IModelCalls>("model", data).map(drop),
        addr::INFERENCE => decode::<abi::IInference::IInferenceCalls>("inference", data).map(drop),
        addr::PARAMS => decode::<abi::IParams::IParamsCalls>("params", data).map(drop),
        addr::GOVERNOR => decode::<abi::IGovernor::IGovernorCalls>("governor", data).map(drop),
        addr::RLHF => decode::<abi::IRlhf::IRlhfCalls>("rlhf", data).map(drop),
        addr::AGENT => decode::<abi::IAgent::IAgentCalls>("agent", data).map(drop),
        _ if data.is_empty() => Ok(()),
        other => Err(ExecError::NotAModule(other)),
    }
}

/// Executes a call from `ctx.sender` to `to` with `ctx.value`: moves the value, then runs the
/// module function. Returns the ABI-encoded return data.
pub fn dispatch(ctx: &mut Ctx, to: Address, data: &[u8]) -> ExecResult<Vec<u8>> {
    let module = addr::name_of(&to);
    if module.is_some() && data.is_empty() {
        return Err(ExecError::NotPayable(format!(
            "the {} module (send value only through a payable function)",
            module.unwrap_or_default()
        )));
    }
    if !ctx.value.is_zero() {
        if let Some(m) = module {
            let name = function_name(&to, data).unwrap_or("?");
            if !PAYABLE.contains(&name) {
                return Err(ExecError::NotPayable(format!("{m}.{name}")));
            }
        }
        let (from, value) = (ctx.sender, ctx.value);
        ctx.transfer(from, to, value)?;
    }
    match to {
        addr::BANK => bank::call(ctx, decode("bank", data)?),
        addr::STAKING => staking::call(ctx, decode("staking", data)?),
        addr::DATANET => datanet::call(ctx, decode("datanet", data)?),
        addr::MODEL => model::call(ctx, decode("model", data)?),
        addr::INFERENCE => inference::call(ctx, decode("inference", data)?),
        addr::PARAMS => params::call(ctx, decode("params", data)?),
        addr::GOVERNOR => governor::call(ctx, decode("governor", data)?),
        addr::RLHF => rlhf::call(ctx, decode("rlhf", data)?),
        addr::AGENT => agent::call(ctx, decode("agent", data)?),
        _ if data.is_empty() => Ok(Vec::new()),
        other => Err(ExecError::NotAModule(other)),
    }
}
