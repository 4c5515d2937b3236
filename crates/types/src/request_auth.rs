//! Signed REST requests. A client proves which address it acts for by signing, with EIP-191
//! `personal_sign`, a message naming the chain, the request and the time; it sends
//! `Authorization: OpenLedger <address>:<unix seconds>:<signature hex>`. The node recovers the
//! address and accepts the request within [`MAX_SKEW_SECS`] of the stated time. Used for reads
//! of permissioned datanets (rows, exports, proofs) and for staging contributions to them.

use alloy_primitives::{Address, Signature};

/// Scheme word of the `Authorization` header.
pub const SCHEME: &str = "OpenLedger";

/// How far (seconds) a request's time may be from the node's clock.
pub const MAX_SKEW_SECS: u64 = 300;

/// The message a client signs for `METHOD path?query` at `time`.
pub fn message(chain_id: u64, method: &str, path_and_query: &str, time: u64) -> String {
    format!("OpenLedger request\nchain: {chain_id}\n{method} {path_and_query}\ntime: {time}")
}

/// The `Authorization` header value for a signature made over [`message`].
pub fn header(address: Address, time: u64, signature: &Signature) -> String {
    format!(
        "{SCHEME} {address}:{time}:0x{}",
        hex_bytes(&signature.as_bytes())
    )
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Checks an `Authorization` header for `METHOD path?query` and returns the signer's address.
pub fn verify(
    header: &str,
    chain_id: u64,
    method: &str,
    path_and_query: &str,
    now: u64,
) -> Result<Address, String> {
    let rest = header
        .strip_prefix(SCHEME)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| format!("the Authorization header must start with \"{SCHEME} \""))?;
    let mut parts = rest.splitn(3, ':');
    let (Some(addr), Some(time), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(
            "the Authorization header must be OpenLedger <address>:<time>:<signature>".into(),
        );
    };
    let claimed: Address = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an address"))?;
    let time: u64 = time
        .parse()
        .map_err(|_| format!("{time:?} is not a unix time"))?;
    if time.abs_diff(now) > MAX_SKEW_SECS {
        return Err(format!(
            "the request was signed at {time}, more than {MAX_SKEW_SECS} s from the node's clock ({now}); check your clock"
        ));
    }
    let sig: Signature = sig
        .parse()
        .map_err(|e| format!("malformed signature: {e}"))?;
    let signer = sig
        .recover_address_from_msg(message(chain_id, method, path_and_query, time))
        .map_err(|e| format!("cannot recover the signer: {e}"))?;
    if signer != claimed {
        return Err(format!(
            "the signature is by {signer}, not by {claimed} (wrong key, chain, path or time)"
        ));
    }
    Ok(claimed)
}
