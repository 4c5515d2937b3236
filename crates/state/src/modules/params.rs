//! Parameters: the governed parameter set, stored as JSON under the key `params`, its views,
//! and its setters, which only the governor (0x…1007) may call: `setParams` replaces the whole
//! set, `setParam` one dotted key. Either is validated as a whole set before it is stored,
//! emits `ParamsChanged`, and applies from the next transaction on (the node reloads the set
//! after a transaction that wrote it).

use crate::{error::ExecResult, kv::StateRead, Ctx, ExecError, StorageError};
use alloy_primitives::U256;
use alloy_sol_types::SolValue;
use openledger_types::{
    abi::IParams,
    modules::{GOVERNOR, PARAMS, TREASURY},
    Params,
};
use serde_json::Value;

/// Key of the parameter set.
pub const KEY: &[u8] = b"params";

/// Reads the parameters in force.
pub fn load(state: &dyn StateRead) -> Result<Params, StorageError> {
    let raw = state
        .get(KEY)?
        .ok_or_else(|| StorageError("state has no parameters: was genesis applied?".into()))?;
    decode(&raw)
}

/// Decodes the stored parameter set (the value at [`KEY`]).
pub fn decode(raw: &[u8]) -> Result<Params, StorageError> {
    serde_json::from_slice(raw).map_err(|e| StorageError(format!("corrupt parameters: {e}")))
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
        C::setParams(c) => {
            only_governor(ctx, "setParams")?;
            let new = from_json_text(&c.json)?;
            store(ctx, new, "*".into())?;
            Vec::new()
        }
        C::setParam(c) => {
            only_governor(ctx, "setParam")?;
            let new = with_key(&load(&ctx.state)?, &c.key, &c.jsonValue)?;
            store(ctx, new, c.key)?;
            Vec::new()
        }
    })
}

fn only_governor(ctx: &Ctx, function: &str) -> ExecResult<()> {
    if ctx.sender == GOVERNOR {
        return Ok(());
    }
    Err(ExecError::Unauthorized(format!(
        "IParams.{function} may only be called by the governor (0x…1007) through an executed proposal, not by {}; propose the change with `openledger gov propose --set key=value`",
        ctx.sender
    )))
}

/// Validates and stores `new`, emitting `ParamsChanged(key)`.
fn store(ctx: &mut Ctx, new: Params, key: String) -> ExecResult<()> {
    new.validate()
        .map_err(|e| ExecError::Invalid(format!("the new parameters are invalid: {e}")))?;
    ctx.state.put(KEY.to_vec(), encode(&new));
    ctx.emit(PARAMS, &IParams::ParamsChanged { key });
    Ok(())
}

/// A whole parameter set from JSON, refusing keys the set does not have (a typo must not be
/// dropped silently).
pub fn from_json_text(json: &str) -> ExecResult<Params> {
    let given: Value = serde_json::from_str(json)
        .map_err(|e| ExecError::Invalid(format!("the parameters are not valid JSON: {e}")))?;
    let params: Params = serde_json::from_value(given.clone())
        .map_err(|e| ExecError::Invalid(format!("the JSON is not a parameter set: {e}")))?;
    let canonical = serde_json::to_value(&params)
        .map_err(|e| StorageError(format!("parameters do not serialize: {e}")))?;
    if let Some(k) = unknown_key(&given, &canonical, "") {
        return Err(ExecError::Invalid(format!(
            "unknown parameter {k:?} (see `openledger params` for the keys)"
        )));
    }
    Ok(params)
}

/// The first key of `given` (dotted) that `canonical` lacks.
fn unknown_key(given: &Value, canonical: &Value, prefix: &str) -> Option<String> {
    let (Value::Object(g), Value::Object(c)) = (given, canonical) else {
        return None;
    };
    g.iter().find_map(|(k, v)| {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match c.get(k) {
            None => Some(path),
            Some(cv) => unknown_key(v, cv, &path),
        }
    })
}

/// `params` with the dotted `key` set to the JSON `json_value`. The key must exist, except a
/// new entry of `call_gas` (a map); a key segment that is not an object key is joined with the
/// rest, so `call_gas.recordInferences.perRecord` names that gas entry.
pub fn with_key(params: &Params, key: &str, json_value: &str) -> ExecResult<Params> {
    let value: Value = serde_json::from_str(json_value).map_err(|e| {
        ExecError::Invalid(format!(
            "the value for {key:?} is not JSON ({e}): numbers are written 6000, OPEN amounts and names \"1.5\""
        ))
    })?;
    let mut all = serde_json::to_value(params)
        .map_err(|e| StorageError(format!("parameters do not serialize: {e}")))?;
    let unknown = || {
        ExecError::Invalid(format!(
            "unknown parameter {key:?} (see `openledger params` for the keys)"
        ))
    };
    let mut node = &mut all;
    let mut rest = key;
    loop {
        let obj = node.as_object_mut().ok_or_else(unknown)?;
        let (head, tail) = match rest.split_once('.') {
            Some((h, t)) if obj.get(h).is_some_and(Value::is_object) => (h, Some(t)),
            _ => (rest, None),
        };
        match tail {
            Some(t) => {
                node = obj.get_mut(head).ok_or_else(unknown)?;
                rest = t;
            }
            None => {
                let is_gas_map =
                    key.len() > rest.len() && key[..key.len() - rest.len()] == *"call_gas.";
                if !obj.contains_key(head) && !is_gas_map {
                    return Err(unknown());
                }
                obj.insert(head.to_string(), value);
                break;
            }
        }
    }
    serde_json::from_value(all)
        .map_err(|e| ExecError::Invalid(format!("{key:?} cannot be set to {json_value}: {e}")))
}
