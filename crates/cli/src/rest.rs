//! A client of the node's REST routes (`/v1/...`, beside JSON-RPC on the same address): JSON
//! reads, raw downloads (whole, or streamed into a writer) and multipart uploads, signed with the
//! `--from` key when one is given (staging always needs it, permissioned datanets too): each
//! signature covers a fresh nonce and the body's hash, so the node can refuse replays. The
//! node's error message is passed on as is.

use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use anyhow::{anyhow, Context, Result};
use openledger_types::request_auth;
use serde::de::DeserializeOwned;
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest response read (exports of big datanets).
const MAX_RESPONSE_BYTES: u64 = 4 << 30;

/// The REST client.
pub struct Rest {
    /// Base URL, e.g. `http://127.0.0.1:8545`.
    pub base: String,
    /// Chain id, for signed requests.
    pub chain_id: u64,
    /// Signs requests when present.
    pub signer: Option<PrivateKeySigner>,
    agent: ureq::Agent,
}

/// One file of an upload.
pub struct Upload {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl Rest {
    /// A client of the node at `base`.
    pub fn new(base: &str, chain_id: u64, signer: Option<PrivateKeySigner>) -> Rest {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build();
        Rest {
            base: base.trim_end_matches('/').to_string(),
            chain_id,
            signer,
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// The `Authorization` header for `METHOD path` with `body`, signed afresh (new nonce).
    fn auth(&self, method: &str, path: &str, body: &[u8]) -> Result<Option<String>> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let time = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let nonce = format!("{:032x}", rand::random::<u128>());
        let hash = request_auth::body_hash(body);
        let msg = request_auth::message(self.chain_id, method, path, time, &nonce, &hash);
        let sig = signer.sign_message_sync(msg.as_bytes())?;
        Ok(Some(request_auth::header(
            signer.address(),
            time,
            &nonce,
            &hash,
            &sig,
        )))
    }

    fn finish(&self, path: &str, mut resp: ureq::http::Response<ureq::Body>) -> Result<Vec<u8>> {
        let status = resp.status();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .with_context(|| format!("reading the node's answer to {path}"))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(self.refusal(path, status, &body))
    }

    /// The error for a refused request: the node's message, or the status.
    fn refusal(&self, path: &str, status: ureq::http::StatusCode, body: &[u8]) -> anyhow::Error {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        match v["error"].as_str() {
            Some(e) => RestError {
                message: e.to_string(),
                body: v.clone(),
            }
            .into(),
            None => anyhow!(
                "{path}: HTTP {status}{}",
                if status.as_u16() == 404 {
                    " (does this node have the REST routes? upgrade it)"
                } else {
                    ""
                }
            ),
        }
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow!(
            "cannot reach the node at {}: {e} (is `openledger node` running?)",
            self.base
        )
    }

    fn get_response(&self, path: &str) -> Result<ureq::http::Response<ureq::Body>> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(a) = self.auth("GET", path, b"")? {
            req = req.header("Authorization", a);
        }
        req.call().map_err(|e| self.unreachable(e))
    }

    /// `GET path`, raw bytes.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let resp = self.get_response(path)?;
        self.finish(path, resp)
    }

    /// `GET path`, written to `out` as it arrives (nothing is held whole); returns the bytes
    /// written. A transfer cut short (the node could not finish) is an error.
    pub fn get_to(&self, path: &str, out: &mut dyn std::io::Write) -> Result<u64> {
        let mut resp = self.get_response(path)?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_vec()
                .with_context(|| format!("reading the node's answer to {path}"))?;
            return Err(self.refusal(path, status, &body));
        }
        let mut reader = resp.body_mut().with_config().reader();
        std::io::copy(&mut reader, out).with_context(|| {
            format!("the node's answer to {path} was cut short (the node could not finish it; see its log)")
        })
    }

    /// `GET path`, as JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let body = self.get_bytes(path)?;
        serde_json::from_slice(&body).with_context(|| format!("unexpected answer to {path}"))
    }

    /// `POST path` with the files as `multipart/form-data`, JSON answer.
    pub fn upload<T: DeserializeOwned>(&self, path: &str, files: &[Upload]) -> Result<T> {
        let boundary = format!("openledger-{:032x}", rand::random::<u128>());
        let mut body = Vec::new();
        for f in files {
            let name = f.name.replace(['"', '\r', '\n'], "_");
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(&f.bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        // The node may refuse before reading (signature, rate, size): let it say so first.
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .header("Expect", "100-continue");
        if let Some(a) = self.auth("POST", path, &body)? {
            req = req.header("Authorization", a);
        }
        let resp = req.send(&body[..]).map_err(|e| self.unreachable(e))?;
        let out = self.finish(path, resp)?;
        serde_json::from_slice(&out).with_context(|| format!("unexpected answer to {path}"))
    }
}

/// An error answer from the node, with its JSON body (which may carry a report).
#[derive(Debug)]
pub struct RestError {
    pub message: String,
    pub body: serde_json::Value,
}

impl std::fmt::Display for RestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RestError {}
