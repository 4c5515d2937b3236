//! Building a proposal's calls from the command line, so nobody hand-encodes ABI:
//! `--set key=value` becomes `IParams.setParam` calls (checked against the parameters in force,
//! the whole changed set validated before anything is sent), `--grant ADDRESS=AMOUNT` an
//! `IBank.treasuryGrant`, and `--call TARGET:SIGNATURE[:JSON_ARGS]` (or `TARGET:0xCALLDATA`) any
//! module call, checked against that module's ABI.

use alloy_primitives::{keccak256, Address, Bytes, U256};
use alloy_sol_types::SolCall;
use anyhow::{anyhow, bail, Context, Result};
use openledger_state::modules::{self, params};
use openledger_types::{
    abi::{IBank, IParams},
    modules as addr,
    units::parse_open,
    Params,
};
use serde_json::Value;

/// One call of a proposal, with a line saying what it does.
pub struct Action {
    pub target: Address,
    pub calldata: Bytes,
    pub summary: String,
}

/// `--set key=value` changes as setParam calls. Keys of one nested group (`fee_split.*`) are
/// merged into one call that sets the whole group, since the set is validated after each call
/// (a split must always sum to 10,000); `call_gas.NAME` entries are set one by one. The result
/// of all the changes is validated here first, with the chain's own rules.
pub fn set_params(current: &Params, sets: &[String]) -> Result<Vec<Action>> {
    let all = serde_json::to_value(current)?;
    let mut groups: Vec<(String, Value)> = Vec::new();
    let mut updated = current.clone();
    for set in sets {
        let (key, raw) = set.split_once('=').ok_or_else(|| {
            anyhow!("--set {set:?}: expected KEY=VALUE, e.g. fee_split.contributors_bps=6000")
        })?;
        let (key, raw) = (key.trim(), raw.trim());
        let value = typed_value(&all, key, raw)?;
        updated = params::with_key(&updated, key, &value.to_string())
            .map_err(|e| anyhow!("--set {key}={raw}: {e}"))?;
        let (group, rest) = match key.split_once('.') {
            Some((g, r)) if g != "call_gas" && all.get(g).is_some_and(Value::is_object) => {
                (g.to_string(), Some(r))
            }
            _ => (key.to_string(), None),
        };
        let slot = match groups.iter_mut().position(|(g, _)| *g == group) {
            Some(i) => &mut groups[i].1,
            None => {
                let start = match rest {
                    Some(_) => all[&group].clone(),
                    None => Value::Null,
                };
                groups.push((group.clone(), start));
                &mut groups.last_mut().expect("just pushed").1
            }
        };
        match rest {
            Some(r) => slot[r] = value,
            None => *slot = value,
        }
    }
    updated.validate().map_err(|e| {
        anyhow!(
            "the parameters after these changes would be invalid: {e}{}",
            hint(&e)
        )
    })?;
    Ok(groups
        .into_iter()
        .map(|(key, value)| {
            let json = value.to_string();
            Action {
                target: addr::PARAMS,
                summary: format!("params.setParam({key} = {json})"),
                calldata: IParams::setParamCall {
                    key,
                    jsonValue: json,
                }
                .abi_encode()
                .into(),
            }
        })
        .collect())
}

fn hint(e: &str) -> &'static str {
    if e.contains("fee_split") {
        " (change another share in the same proposal, e.g. --set fee_split.model_owner_bps=2000)"
    } else {
        ""
    }
}

/// The JSON value for `raw` at `key`: a string where the parameter is a string (OPEN amounts,
/// names), else `raw` parsed as JSON (numbers, booleans, objects).
fn typed_value(all: &Value, key: &str, raw: &str) -> Result<Value> {
    let current = key
        .split_once('.')
        .and_then(|(g, r)| all.get(g).and_then(|o| o.get(r)))
        .or_else(|| all.get(key));
    match current {
        Some(Value::String(_)) if !raw.starts_with('"') => Ok(Value::String(raw.to_string())),
        _ => serde_json::from_str(raw).with_context(|| {
            format!("--set {key}={raw}: the value is not JSON (numbers: 6000; text: \"…\")")
        }),
    }
}

/// `--grant ADDRESS=AMOUNT` as a treasury grant with `reason`.
pub fn grant(spec: &str, reason: &str) -> Result<Action> {
    let (to, amount) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("--grant {spec:?}: expected ADDRESS=AMOUNT, e.g. 0xabc…=1000"))?;
    let to: Address = to
        .trim()
        .parse()
        .with_context(|| format!("--grant {spec:?}: {to:?} is not an address"))?;
    let amount = parse_open(amount).map_err(|e| anyhow!("--grant {spec:?}: {e}"))?;
    Ok(Action {
        target: addr::BANK,
        summary: format!(
            "bank.treasuryGrant({to}, {} OPEN)",
            openledger_types::units::format_open(amount)
        ),
        calldata: IBank::treasuryGrantCall {
            to,
            amount,
            reason: reason.to_string(),
        }
        .abi_encode()
        .into(),
    })
}

/// `--call TARGET:SIGNATURE[:JSON_ARGS]` or `--call TARGET:0xCALLDATA`. TARGET is a module name
/// (`params`, `bank`, `staking`, …) or address; SIGNATURE like `setParam(string,string)`;
/// JSON_ARGS a JSON array, e.g. `["min_stake","\"2\""]`. Supported argument types: address,
/// bool, string, bytes, bytes1–bytes32, uint8–uint256 (use raw calldata for others).
pub fn call(spec: &str) -> Result<Action> {
    let (target, rest) = spec
        .split_once(':')
        .ok_or_else(|| anyhow!("--call {spec:?}: expected TARGET:SIGNATURE[:JSON_ARGS]"))?;
    let target = module(target)?;
    let calldata: Vec<u8> = if let Some(hex) = rest.strip_prefix("0x") {
        alloy_primitives::hex::decode(hex).with_context(|| format!("--call {spec:?}: bad hex"))?
    } else {
        let (sig, args) = match rest.find(')') {
            Some(i) => (&rest[..=i], rest[i + 1..].strip_prefix(':').unwrap_or("")),
            None => bail!("--call {spec:?}: the signature needs its argument types, e.g. setParam(string,string)"),
        };
        encode(sig, args).with_context(|| format!("--call {spec:?}"))?
    };
    modules::check_calldata(&target, &calldata)
        .map_err(|e| anyhow!("--call {spec:?} does not fit the module's ABI: {e}"))?;
    let name = modules::function_name(&target, &calldata).unwrap_or("?");
    Ok(Action {
        target,
        summary: format!("{}.{name}(…)", addr::name_of(&target).unwrap_or("?")),
        calldata: calldata.into(),
    })
}

/// A module by name or address.
pub fn module(name: &str) -> Result<Address> {
    if let Some((a, _)) = addr::ALL.iter().find(|(_, n)| *n == name) {
        return Ok(*a);
    }
    let a: Address = name.parse().map_err(|_| {
        let names: Vec<&str> = addr::ALL.iter().map(|(_, n)| *n).collect();
        anyhow!(
            "{name:?} is not a module: use one of {} or an address",
            names.join(", ")
        )
    })?;
    Ok(a)
}

/// ABI-encodes a call of `sig` with the JSON array `args`.
fn encode(sig: &str, args: &str) -> Result<Vec<u8>> {
    let sig: String = sig.chars().filter(|c| !c.is_whitespace()).collect();
    let open = sig
        .find('(')
        .ok_or_else(|| anyhow!("{sig:?} is not a signature"))?;
    let inner = &sig[open + 1..sig.len() - 1];
    let types: Vec<&str> = if inner.is_empty() {
        vec![]
    } else {
        inner.split(',').collect()
    };
    let values: Vec<Value> = if args.trim().is_empty() {
        vec![]
    } else {
        serde_json::from_str(args).context("the arguments must be a JSON array")?
    };
    if values.len() != types.len() {
        bail!(
            "{sig} takes {} arguments, {} given",
            types.len(),
            values.len()
        );
    }
    let mut heads: Vec<[u8; 32]> = Vec::new();
    let mut tails: Vec<Vec<u8>> = Vec::new();
    for (t, v) in types.iter().zip(&values) {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let bad = |why: String| anyhow!("argument {text:?} as {t}: {why}");
        let word = |x: U256| x.to_be_bytes::<32>();
        match *t {
            "address" => {
                let a: Address = text.parse().map_err(|e| bad(format!("{e}")))?;
                heads.push(word(U256::from_be_slice(a.as_slice())));
                tails.push(vec![]);
            }
            "bool" => {
                let b: bool = text.parse().map_err(|e| bad(format!("{e}")))?;
                heads.push(word(U256::from(b as u8)));
                tails.push(vec![]);
            }
            "string" | "bytes" => {
                let data = if *t == "string" {
                    text.into_bytes()
                } else {
                    let h = text.strip_prefix("0x").unwrap_or(&text);
                    alloy_primitives::hex::decode(h).map_err(|e| bad(format!("{e}")))?
                };
                let mut tail = word(U256::from(data.len())).to_vec();
                tail.extend_from_slice(&data);
                tail.resize(32 + data.len().div_ceil(32) * 32, 0);
                heads.push([0; 32]);
                tails.push(tail);
            }
            t if t.starts_with("uint") => {
                let bits: usize = if t == "uint" {
                    256
                } else {
                    t[4..].parse().map_err(|_| bad("unknown type".into()))?
                };
                let x: U256 = text.parse().map_err(|e| bad(format!("{e}")))?;
                if bits < 256 && x >> bits != U256::ZERO {
                    return Err(bad(format!("does not fit {bits} bits")));
                }
                heads.push(word(x));
                tails.push(vec![]);
            }
            t if t.starts_with("bytes") => {
                let n: usize = t[5..].parse().map_err(|_| bad("unknown type".into()))?;
                let h = text.strip_prefix("0x").unwrap_or(&text);
                let b = alloy_primitives::hex::decode(h).map_err(|e| bad(format!("{e}")))?;
                if n == 0 || n > 32 || b.len() != n {
                    return Err(bad(format!("expected {n} bytes")));
                }
                let mut w = [0u8; 32];
                w[..n].copy_from_slice(&b);
                heads.push(w);
                tails.push(vec![]);
            }
            other => bail!(
                "argument type {other} is not supported here: pass the calldata as TARGET:0x…"
            ),
        }
    }
    let mut out = keccak256(sig.as_bytes())[..4].to_vec();
    let mut offset = 32 * heads.len();
    for (head, tail) in heads.iter_mut().zip(&tails) {
        if !tail.is_empty() {
            *head = U256::from(offset).to_be_bytes::<32>();
            offset += tail.len();
        }
    }
    for h in &heads {
        out.extend_from_slice(h);
    }
    for t in tails {
        out.extend_from_slice(&t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_spec_encodes_as_the_generated_binding_does() {
        let a = call(r#"params:setParam(string,string):["min_stake","\"2\""]"#).unwrap();
        let expected = IParams::setParamCall {
            key: "min_stake".into(),
            jsonValue: "\"2\"".into(),
        }
        .abi_encode();
        assert_eq!(a.calldata.to_vec(), expected);
        assert_eq!(a.target, addr::PARAMS);
        let to = Address::repeat_byte(7);
        let g = call(&format!(
            r#"bank:treasuryGrant(address,uint256,string):["{to}", 5, "why"]"#
        ))
        .unwrap();
        let expected = IBank::treasuryGrantCall {
            to,
            amount: U256::from(5),
            reason: "why".into(),
        }
        .abi_encode();
        assert_eq!(g.calldata.to_vec(), expected);
        assert!(call("params:noSuch(uint256):[1]").is_err());
    }

    #[test]
    fn set_groups_a_split_and_refuses_one_that_does_not_sum() {
        let p = Params::default();
        let err = set_params(&p, &["fee_split.contributors_bps=6000".into()])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("must sum to") && err.contains("model_owner_bps"),
            "{err}"
        );
        let actions = set_params(
            &p,
            &[
                "fee_split.contributors_bps=6000".into(),
                "fee_split.model_owner_bps=2000".into(),
                "min_stake=2.5".into(),
            ],
        )
        .unwrap();
        assert_eq!(actions.len(), 2);
        let first = IParams::setParamCall::abi_decode(&actions[0].calldata).unwrap();
        assert_eq!(first.key, "fee_split");
        let v: Value = serde_json::from_str(&first.jsonValue).unwrap();
        assert_eq!(
            (
                v["contributors_bps"].as_u64(),
                v["model_owner_bps"].as_u64()
            ),
            (Some(6000), Some(2000))
        );
        let second = IParams::setParamCall::abi_decode(&actions[1].calldata).unwrap();
        assert_eq!(
            (second.key.as_str(), second.jsonValue.as_str()),
            ("min_stake", "\"2.5\"")
        );
        assert!(set_params(&p, &["no_such_key=1".into()]).is_err());
    }
}
