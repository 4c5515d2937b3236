//! Signed REST requests. A client proves which address it acts for by signing, with EIP-191
//! `personal_sign`, a message naming the chain, the request, the time, a nonce it picks afresh
//! for every request and the keccak-256 hash of the request body; it sends
//! `Authorization: OpenLedger <address>:<unix seconds>:<nonce>:<body hash>:<signature hex>`.
//! The node recovers the address, accepts the request within [`MAX_SKEW_SECS`] of the stated
//! time, checks the body it receives against the signed hash, and remembers every signed request
//! it accepted for as long as its time is valid ([`Signed::replay_key`]), so the same signed
//! request cannot be sent twice. Used for staging contributions (always signed) and for reads of
//! permissioned datanets (rows, exports, proofs).

use alloy_primitives::{keccak256, Address, Signature, B256};

/// Scheme word of the `Authorization` header.
pub const SCHEME: &str = "OpenLedger";

/// How far (seconds) a request's time may be from the node's clock.
pub const MAX_SKEW_SECS: u64 = 300;

/// Longest nonce accepted, in characters.
pub const MAX_NONCE_LEN: usize = 64;

/// The hash of a request body that a signature covers (keccak-256; the empty body for GET).
pub fn body_hash(body: &[u8]) -> B256 {
    keccak256(body)
}

/// The message a client signs for `METHOD path?query` at `time`, with `nonce` and the hash of
/// the body it sends.
pub fn message(
    chain_id: u64,
    method: &str,
    path_and_query: &str,
    time: u64,
    nonce: &str,
    body_hash: &B256,
) -> String {
    format!(
        "OpenLedger request\nchain: {chain_id}\n{method} {path_and_query}\ntime: {time}\nnonce: {nonce}\nbody: {body_hash}"
    )
}

/// The `Authorization` header value for a signature made over [`message`].
pub fn header(
    address: Address,
    time: u64,
    nonce: &str,
    body_hash: &B256,
    signature: &Signature,
) -> String {
    format!(
        "{SCHEME} {address}:{time}:{nonce}:{body_hash}:0x{}",
        hex_bytes(&signature.as_bytes())
    )
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A request whose signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// Who signed it.
    pub address: Address,
    /// When, as the signer stated (unix seconds).
    pub time: u64,
    /// The signer's nonce.
    pub nonce: String,
    /// The hash of the body the signer sent; the receiver must check the body against it.
    pub body_hash: B256,
    /// What identifies this signed request (the signer and the whole message): a receiver that
    /// remembers it until `time + MAX_SKEW_SECS` refuses any replay. A signature's other
    /// encodings (ECDSA malleability) sign the same message, so they share the key.
    pub replay_key: B256,
}

/// Whether `nonce` is acceptable: 1 to [`MAX_NONCE_LEN`] ASCII letters, digits, `-` or `_`.
pub fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce.len() <= MAX_NONCE_LEN
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks an `Authorization` header for `METHOD path?query` and returns what was signed. The
/// body is not checked here: compare its hash with [`Signed::body_hash`] once it is read.
pub fn verify(
    header: &str,
    chain_id: u64,
    method: &str,
    path_and_query: &str,
    now: u64,
) -> Result<Signed, String> {
    let rest = header
        .strip_prefix(SCHEME)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| format!("the Authorization header must start with \"{SCHEME} \""))?;
    let parts: Vec<&str> = rest.splitn(5, ':').collect();
    let [addr, time, nonce, hash, sig] = parts[..] else {
        return Err(
            "the Authorization header must be OpenLedger <address>:<time>:<nonce>:<body hash>:<signature> (upgrade the client)".into(),
        );
    };
    let claimed: Address = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an address"))?;
    let time: u64 = time
        .parse()
        .map_err(|_| format!("{time:?} is not a unix time"))?;
    if !valid_nonce(nonce) {
        return Err(format!(
            "the nonce must be 1 to {MAX_NONCE_LEN} letters, digits, '-' or '_'"
        ));
    }
    let body_hash: B256 = hash
        .parse()
        .map_err(|_| format!("{hash:?} is not a 32-byte body hash"))?;
    if time.abs_diff(now) > MAX_SKEW_SECS {
        return Err(format!(
            "the request was signed at {time}, more than {MAX_SKEW_SECS} s from the node's clock ({now}); check your clock"
        ));
    }
    let sig: Signature = sig
        .parse()
        .map_err(|e| format!("malformed signature: {e}"))?;
    let msg = message(chain_id, method, path_and_query, time, nonce, &body_hash);
    let signer = sig
        .recover_address_from_msg(&msg)
        .map_err(|e| format!("cannot recover the signer: {e}"))?;
    if signer != claimed {
        return Err(format!(
            "the signature is by {signer}, not by {claimed} (wrong key, chain, path, time, nonce or body)"
        ));
    }
    let mut keyed = claimed.to_vec();
    keyed.extend_from_slice(msg.as_bytes());
    Ok(Signed {
        address: claimed,
        time,
        nonce: nonce.to_string(),
        body_hash,
        replay_key: keccak256(&keyed),
    })
}
