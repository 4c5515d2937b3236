//! Signed REST requests: a header made by the client's key verifies for exactly the chain,
//! method, path, time, nonce and body hash it was made for, and any change — another path,
//! chain, body or key, a stale time, a mangled header — is refused with a reason. The replay key
//! names the signed request: the same request gives the same key, another nonce another key.

use alloy_primitives::keccak256;
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use openledger_types::request_auth::{body_hash, header, message, verify, MAX_SKEW_SECS};

fn signed(
    key: &PrivateKeySigner,
    chain: u64,
    method: &str,
    path: &str,
    time: u64,
    nonce: &str,
    body: &[u8],
) -> String {
    let hash = body_hash(body);
    let sig = key
        .sign_message_sync(message(chain, method, path, time, nonce, &hash).as_bytes())
        .unwrap();
    header(key.address(), time, nonce, &hash, &sig)
}

#[test]
fn a_signed_request_verifies_only_for_what_was_signed() {
    let key = PrivateKeySigner::from_bytes(&keccak256("auth test")).unwrap();
    let other = PrivateKeySigner::from_bytes(&keccak256("someone else")).unwrap();
    let (t, path) = (1_800_000_000, "/v1/datanets/2/stage");
    let body = b"--x\r\nfile bytes\r\n--x--\r\n";
    let h = signed(&key, 7, "POST", path, t, "n1", body);
    let ok = verify(&h, 7, "POST", path, t + 5).unwrap();
    assert_eq!(ok.address, key.address());
    assert_eq!(ok.body_hash, body_hash(body));
    assert_ne!(ok.body_hash, body_hash(b"another body"));
    assert_eq!(ok.nonce, "n1");

    let err = verify(&h, 7, "POST", "/v1/datanets/3/stage", t).unwrap_err();
    assert!(err.contains("not by"), "{err}");
    assert!(verify(&h, 8, "POST", path, t).is_err(), "another chain");
    assert!(verify(&h, 7, "GET", path, t).is_err(), "another method");
    let err = verify(&h, 7, "POST", path, t + MAX_SKEW_SECS + 1).unwrap_err();
    assert!(err.contains("check your clock"), "{err}");

    // The body hash and the nonce are signed: changing either breaks the signature.
    let swapped = h.replace(
        &body_hash(body).to_string(),
        &body_hash(b"another body").to_string(),
    );
    assert!(verify(&swapped, 7, "POST", path, t)
        .unwrap_err()
        .contains("not by"));
    let renonced = h.replace(":n1:", ":n2:");
    assert!(verify(&renonced, 7, "POST", path, t)
        .unwrap_err()
        .contains("not by"));

    // The same signed request has the same replay key; a fresh nonce makes a new one.
    let again = verify(&h, 7, "POST", path, t + 9).unwrap();
    assert_eq!(again.replay_key, ok.replay_key);
    let fresh = signed(&key, 7, "POST", path, t, "n2", body);
    assert_ne!(
        verify(&fresh, 7, "POST", path, t).unwrap().replay_key,
        ok.replay_key
    );

    // Someone else's signature under our address.
    let forged = signed(&other, 7, "POST", path, t, "n1", body)
        .replace(&other.address().to_string(), &key.address().to_string());
    let err = verify(&forged, 7, "POST", path, t).unwrap_err();
    assert!(err.contains("not by"), "{err}");
    let bad_nonce = h.replace(":n1:", ":n 1:");
    assert!(verify(&bad_nonce, 7, "POST", path, t)
        .unwrap_err()
        .contains("nonce"));
    for bad in [
        "Bearer x",
        "OpenLedger nope",
        "OpenLedger 0x12:1:0x00",
        // The old three-part header (no nonce or body hash).
        "OpenLedger 0x000000000000000000000000000000000000dEaD:1800000000:0x00",
    ] {
        assert!(verify(bad, 7, "POST", path, t).is_err(), "{bad}");
    }
}
