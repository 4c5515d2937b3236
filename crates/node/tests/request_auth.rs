//! Signed REST requests: a header made by the client's key verifies for exactly the chain,
//! method, path and time it was made for, and any change — another path, chain or key, a stale
//! time, a mangled header — is refused with a reason.

use alloy_primitives::keccak256;
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use openledger_types::request_auth::{header, message, verify, MAX_SKEW_SECS};

fn signed(key: &PrivateKeySigner, chain: u64, method: &str, path: &str, time: u64) -> String {
    let sig = key
        .sign_message_sync(message(chain, method, path, time).as_bytes())
        .unwrap();
    header(key.address(), time, &sig)
}

#[test]
fn a_signed_request_verifies_only_for_what_was_signed() {
    let key = PrivateKeySigner::from_bytes(&keccak256("auth test")).unwrap();
    let other = PrivateKeySigner::from_bytes(&keccak256("someone else")).unwrap();
    let (t, path) = (1_800_000_000, "/v1/datanets/2/export?version=1");
    let h = signed(&key, 7, "GET", path, t);
    assert_eq!(verify(&h, 7, "GET", path, t + 5), Ok(key.address()));

    let err = verify(&h, 7, "GET", "/v1/datanets/3/export?version=1", t).unwrap_err();
    assert!(err.contains("not by"), "{err}");
    assert!(verify(&h, 8, "GET", path, t).is_err(), "another chain");
    assert!(verify(&h, 7, "POST", path, t).is_err(), "another method");
    let err = verify(&h, 7, "GET", path, t + MAX_SKEW_SECS + 1).unwrap_err();
    assert!(err.contains("check your clock"), "{err}");

    // Someone else's signature under our address.
    let forged = signed(&other, 7, "GET", path, t)
        .replace(&other.address().to_string(), &key.address().to_string());
    let err = verify(&forged, 7, "GET", path, t).unwrap_err();
    assert!(err.contains("not by"), "{err}");
    for bad in ["Bearer x", "OpenLedger nope", "OpenLedger 0x12:1:0x00"] {
        assert!(verify(bad, 7, "GET", path, t).is_err(), "{bad}");
    }
}
