//! The OpenAI-compatible routes. Every request value is parsed field by field so a malformed one is
//! answered 400 naming its `param`, and bounded (body size, messages, strings, `n`, `stop`,
//! `max_tokens` within the context) before any compute. Each completion request runs in a `tracing`
//! span carrying its id (the response's `id`), so its queueing, finish and refusal logs can be
//! followed; `GET /metrics` serves [`crate::metrics::render`]. OpenAI's `logprobs` are checked and
//! shaped in [`logprobs`].

mod logprobs;

use crate::engine::{Event, Job};
use crate::error::ServeError;
use crate::ledger::{ChainAdapter, Hold, Ledger, Served};
use crate::Serve;
use alloy_primitives::{keccak256, Address, B256};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use logprobs::{Shaper, TextOffset};
use openledger_model::chat::Message;
use openledger_model::generate::{FinishReason, GenerateParams};
use openledger_model::sampling::TokenLogprobs;
use openledger_model::{LoraAdapter, SamplingParams};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::Instrument;

/// Most choices per request.
pub const MAX_N: usize = 8;
/// Most stop strings, and the longest one in bytes.
pub const MAX_STOP: usize = 4;
pub const MAX_STOP_LEN: usize = 256;
/// Most chat messages per request.
pub const MAX_MESSAGES: usize = 512;
/// Longest `model` value.
pub const MAX_MODEL_LEN: usize = 256;

/// The routes, with their state applied; merge into the node's router.
pub fn router(state: Arc<Serve>) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/load_lora_adapter", post(load_lora_adapter))
        .route("/v1/unload_lora_adapter", post(unload_lora_adapter))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn request_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let salt = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!(
        "{prefix}-{:016x}{:x}",
        salt,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn metrics(State(s): State<Arc<Serve>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(&s),
    )
        .into_response()
}

async fn list_models(State(s): State<Arc<Serve>>) -> Json<Value> {
    let created = now();
    let ctx = s.engine.model().config.max_position;
    let mut data = vec![json!({
        "id": s.model_id, "object": "model", "created": created, "owned_by": "openledger",
        "root": s.model_id, "parent": null, "max_model_len": ctx,
    })];
    for name in s.adapters.names() {
        data.push(json!({
            "id": name, "object": "model", "created": created, "owned_by": "openledger",
            "root": name, "parent": s.model_id, "max_model_len": ctx,
        }));
    }
    if let Some(l) = s.ledger() {
        let l = l.clone();
        let chain = tokio::task::spawn_blocking(move || l.adapters())
            .await
            .unwrap_or_default();
        for (id, name) in chain {
            data.push(json!({
                "id": name, "object": "model", "created": created, "owned_by": "openledger",
                "root": format!("adapter-{id}"), "parent": s.model_id, "max_model_len": ctx,
                "adapter_id": id,
            }));
        }
    }
    Json(json!({"object": "list", "data": data}))
}

fn parse_body(body: &Bytes) -> Result<Map<String, Value>, ServeError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ServeError::bad(
            "body",
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ServeError::bad(
            "body",
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

/// An optional field of type `T`; `null` counts as absent.
fn field<T: DeserializeOwned>(
    obj: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<T>, ServeError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| ServeError::bad(name, format!("`{name}` is malformed: {e}"))),
    }
}

/// What both completion routes share, parsed and checked.
struct Common {
    model: String,
    n: usize,
    stream: bool,
    include_usage: bool,
    max_tokens: Option<usize>,
    stop: Vec<String>,
    sampling: SamplingParams,
}

fn parse_common(obj: &Map<String, Value>) -> Result<Common, ServeError> {
    let model: String =
        field(obj, "model")?.ok_or_else(|| ServeError::bad("model", "`model` is required"))?;
    if model.is_empty() || model.len() > MAX_MODEL_LEN {
        return Err(ServeError::bad(
            "model",
            format!("`model` must be 1 to {MAX_MODEL_LEN} bytes"),
        ));
    }
    let n: u64 = field(obj, "n")?.unwrap_or(1);
    if n == 0 || n > MAX_N as u64 {
        return Err(ServeError::bad(
            "n",
            format!("`n` must be between 1 and {MAX_N}"),
        ));
    }
    let stream: bool = field(obj, "stream")?.unwrap_or(false);
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => field::<bool>(o, "include_usage")
            .map_err(|_| {
                ServeError::bad(
                    "stream_options",
                    "`stream_options.include_usage` must be a boolean",
                )
            })?
            .unwrap_or(false),
        Some(_) => {
            return Err(ServeError::bad(
                "stream_options",
                "`stream_options` must be an object",
            ))
        }
    };
    let max_completion: Option<u64> = field(obj, "max_completion_tokens")?;
    let max_plain: Option<u64> = field(obj, "max_tokens")?;
    let (max_tokens, param) = match (max_completion, max_plain) {
        (Some(m), _) => (Some(m), "max_completion_tokens"),
        (None, m) => (m, "max_tokens"),
    };
    if max_tokens == Some(0) {
        return Err(ServeError::bad(
            param,
            format!("`{param}` must be at least 1"),
        ));
    }
    let stop = match obj.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ServeError::bad("stop", "`stop` must be a string or a list of strings")
            })?,
        Some(_) => {
            return Err(ServeError::bad(
                "stop",
                "`stop` must be a string or a list of strings",
            ))
        }
    };
    if stop.len() > MAX_STOP || stop.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_LEN) {
        return Err(ServeError::bad(
            "stop",
            format!(
                "`stop` holds at most {MAX_STOP} non-empty strings of at most {MAX_STOP_LEN} bytes"
            ),
        ));
    }
    let temperature: f64 = field(obj, "temperature")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ServeError::bad(
            "temperature",
            "`temperature` must be between 0 and 2",
        ));
    }
    let top_p: f64 = field(obj, "top_p")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ServeError::bad("top_p", "`top_p` must be in (0, 1]"));
    }
    let seed: Option<i64> = field(obj, "seed")?;
    let sampling = SamplingParams {
        temperature: temperature as f32,
        top_p: top_p as f32,
        seed: seed.map(|s| s as u64).unwrap_or_else(|| {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        }),
        ..SamplingParams::default()
    };
    Ok(Common {
        model,
        n: n as usize,
        stream,
        include_usage,
        max_tokens: max_tokens.map(|m| m.min(usize::MAX as u64) as usize),
        stop,
        sampling,
    })
}

fn parse_messages(obj: &Map<String, Value>) -> Result<Vec<Message>, ServeError> {
    let bad = |m: String| ServeError::bad("messages", m);
    let Some(Value::Array(list)) = obj.get("messages") else {
        return Err(bad("`messages` must be a list of messages".into()));
    };
    if list.is_empty() || list.len() > MAX_MESSAGES {
        return Err(bad(format!(
            "`messages` must hold 1 to {MAX_MESSAGES} messages"
        )));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let role = match role {
            "system" | "user" | "assistant" | "tool" => role,
            "developer" => "system",
            _ => {
                return Err(bad(format!(
                    "messages[{i}].role must be system, developer, user, assistant or tool"
                )))
            }
        };
        let content = match m.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for p in parts {
                    match (
                        p.get("type").and_then(Value::as_str),
                        p.get("text").and_then(Value::as_str),
                    ) {
                        (Some("text"), Some(t)) => text.push_str(t),
                        _ => {
                            return Err(bad(format!(
                                "messages[{i}].content: only text parts are supported"
                            )))
                        }
                    }
                }
                text
            }
            Some(_) => {
                return Err(bad(format!(
                    "messages[{i}].content must be a string or a list of text parts"
                )))
            }
        };
        out.push(Message::new(role, &content));
    }
    Ok(out)
}

/// The text of the last user message (what a chat call's attribution re-ranks rows with).
fn last_user_message(obj: &Map<String, Value>) -> String {
    let Some(Value::Array(list)) = obj.get("messages") else {
        return String::new();
    };
    list.iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(|c| match c {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
            _ => String::new(),
        })
        .unwrap_or_default()
}

fn parse_prompt(obj: &Map<String, Value>) -> Result<String, ServeError> {
    match obj.get("prompt") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            Ok(a[0].as_str().unwrap_or_default().to_string())
        }
        _ => Err(ServeError::bad(
            "prompt",
            "`prompt` must be a string (or a list of exactly one string)",
        )),
    }
}

/// What a `model` value names.
pub(crate) struct Target {
    /// Adapter key (for fair scheduling) and weights; `None` is the base model.
    adapter: Option<(String, Arc<LoraAdapter>)>,
    /// The on-chain registration, for adapters served from the chain.
    chain: Option<ChainAdapter>,
    /// The name of a local adapter (registered by the operator, served free).
    local: Option<String>,
}

/// The base model, a local adapter, or an adapter registered on chain (by name or
/// `adapter-<id>`), with its weights loaded; 404 when it names nothing. For [`Serve::preload`].
pub(crate) async fn resolve_model(s: &Arc<Serve>, model: &str) -> Result<Target, ServeError> {
    let target = locate(s, model).await?;
    load(s, model, target).await
}

/// What `model` names, without loading any weights (so a paid adapter's caller is checked
/// before its weights take room in the cache).
async fn locate(s: &Arc<Serve>, model: &str) -> Result<Target, ServeError> {
    let none = Target {
        adapter: None,
        chain: None,
        local: None,
    };
    if model == s.model_id {
        return Ok(none);
    }
    // Keys of on-chain adapters (`adapter-<id>`) resolve through the chain below, so they are
    // never served as free local adapters.
    if s.adapters.contains_local(model) {
        return Ok(Target {
            local: Some(model.to_string()),
            ..none
        });
    }
    let chain = match s.cached_chain_adapter(model) {
        Some(c) => Some(c),
        None => match s.ledger() {
            Some(l) => {
                let (l, m) = (l.clone(), model.to_string());
                let found = tokio::task::spawn_blocking(move || l.resolve(&m))
                    .await
                    .map_err(|_| ServeError::EngineStopped)?
                    .map_err(|e| ServeError::Adapter {
                        name: model.to_string(),
                        message: e,
                    })?;
                // An adapter whose index is not on this node yet is looked up again next time,
                // so its calls are attributed once the index arrives.
                if let Some(c) = found.as_ref().filter(|c| c.index_dir.is_some()) {
                    s.remember_chain_adapter(model, c);
                }
                found
            }
            None => None,
        },
    };
    match chain {
        Some(chain) => Ok(Target {
            chain: Some(chain),
            ..none
        }),
        None => Err(ServeError::UnknownModel(model.to_string())),
    }
}

/// Loads the weights of a located target.
async fn load(s: &Arc<Serve>, model: &str, mut t: Target) -> Result<Target, ServeError> {
    let key = match (&t.chain, &t.local) {
        (Some(chain), _) => {
            let key = format!("adapter-{}", chain.id);
            s.adapters
                .register_chain(&key, &chain.peft_dir, chain.pinned);
            key
        }
        (None, Some(name)) => name.clone(),
        (None, None) => return Ok(t), // the base model
    };
    match s.adapters.get(&key).await? {
        Some(a) => {
            t.adapter = Some((key, a));
            Ok(t)
        }
        None => Err(ServeError::UnknownModel(model.to_string())),
    }
}

/// The bearer token of `Authorization: Bearer …`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Payment for one call to an on-chain adapter: who pays, the hold on their credit, and what
/// the charge commits to.
struct Billing {
    ledger: Arc<dyn Ledger>,
    hold: Option<Hold>,
    caller: Address,
    chain: ChainAdapter,
    request_id: B256,
    prompt_tokens: u32,
    /// The prompt text attributed (see [`crate::attribution`]).
    attributed_prompt: String,
}

impl Billing {
    /// Authorises and holds the most this call can cost; `None` when the call is free (the base
    /// model, a local adapter, or a node without an operator account).
    fn open(
        s: &Serve,
        headers: &HeaderMap,
        target: &Target,
        id: &str,
        prompt_tokens: usize,
        max_completion: usize,
        attributed_prompt: String,
    ) -> Result<Option<Billing>, ServeError> {
        let (Some(ledger), Some(chain)) = (s.ledger(), &target.chain) else {
            return Ok(None);
        };
        if !ledger.billing() {
            return Ok(None);
        }
        let key = bearer(headers).ok_or_else(|| {
            ServeError::Unauthorized(format!(
                "adapter `{}` is paid per token: send an API key bound to your account as `Authorization: Bearer olk_…` (create one with `openledger api-key new`)",
                chain.name
            ))
        })?;
        let caller = ledger.account(key).ok_or_else(|| {
            ServeError::Unauthorized(
                "this API key is not bound to an account on this node (create one with `openledger api-key new`)".into(),
            )
        })?;
        let clamp = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
        let hold = ledger
            .reserve(
                caller,
                chain.id,
                clamp(prompt_tokens),
                clamp(max_completion),
            )
            .map_err(ServeError::PaymentRequired)?;
        Ok(Some(Billing {
            ledger: ledger.clone(),
            hold: Some(hold),
            caller,
            chain: chain.clone(),
            request_id: keccak256(id.as_bytes()),
            prompt_tokens: clamp(prompt_tokens),
            attributed_prompt,
        }))
    }

    /// Attributes the delivered text and charges for `completion_tokens` (blocking). A call
    /// cancelled before any completion token reached the client is not charged; a finished one
    /// pays its prompt even when the model stopped at once.
    fn settle(
        mut self,
        s: &Serve,
        texts: &[String],
        completion_tokens: usize,
        finished: bool,
    ) -> Result<Option<Value>, ServeError> {
        let Some(hold) = self.hold.take() else {
            return Ok(None);
        };
        if completion_tokens == 0 && !finished {
            self.ledger.release(hold);
            return Ok(None);
        }
        let attribution = match &self.chain.index_dir {
            Some(dir) => {
                let response = texts.join("\n\n");
                match s.indexes.attribute(
                    dir,
                    s.engine.tokenizer(),
                    &self.attributed_prompt,
                    &response,
                ) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        tracing::warn!(error = %e, "attribution failed; charging without it");
                        None
                    }
                }
            }
            None => None,
        };
        let (top, root) = attribution
            .as_ref()
            .map(|a| (a.top.clone(), a.root))
            .unwrap_or_default();
        let served = Served {
            request_id: self.request_id,
            caller: self.caller,
            adapter_id: self.chain.id,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: u32::try_from(completion_tokens).unwrap_or(u32::MAX),
            top,
            attribution_root: root,
        };
        self.ledger.charge(hold, served).map_err(|e| {
            ServeError::Ledger(format!(
                "recording the charge failed, nothing was charged: {e}"
            ))
        })?;
        let mut json = attribution.map(|a| a.json).unwrap_or_else(|| json!({}));
        json["adapter"] = json!(self.chain.name);
        json["adapter_id"] = json!(self.chain.id);
        json["receipt"] = json!({
            "request_id": self.request_id.to_string(),
            "caller": self.caller.to_string(),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "status": "journaled",
        });
        Ok(Some(json))
    }
}

impl Drop for Billing {
    fn drop(&mut self) {
        if let Some(h) = self.hold.take() {
            self.ledger.release(h);
        }
    }
}

/// Attribution of a free call to an on-chain adapter with an index (no receipt).
fn attribute_free(s: &Serve, target: &Target, prompt: &str, texts: &[String]) -> Option<Value> {
    let chain = target.chain.as_ref()?;
    let dir = chain.index_dir.as_ref()?;
    let mut v = s
        .indexes
        .attribute(dir, s.engine.tokenizer(), prompt, &texts.join("\n\n"))
        .map_err(|e| tracing::warn!(error = %e, "attribution failed"))
        .ok()?
        .json;
    v["adapter"] = json!(chain.name);
    v["adapter_id"] = json!(chain.id);
    Some(v)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Text,
}

/// Checks the context, queues `n` sequences and answers (streamed or whole).
#[allow(clippy::too_many_arguments)]
async fn run(
    s: Arc<Serve>,
    headers: HeaderMap,
    kind: Kind,
    id: String,
    common: Common,
    prompt: Vec<u32>,
    prompt_param: &'static str,
    attributed_prompt: String,
) -> Result<Response, ServeError> {
    // Who pays is checked before the adapter's weights are loaded (below, after the hold).
    let target = locate(&s, &common.model).await?;
    let ctx = s.engine.model().config.max_position;
    let room = ctx.saturating_sub(prompt.len());
    let max_tokens = match common.max_tokens {
        Some(m) => m,
        None => s.config.default_max_tokens.min(room),
    };
    if prompt.is_empty() {
        return Err(ServeError::bad(
            prompt_param,
            format!("`{prompt_param}` is empty"),
        ));
    }
    if max_tokens == 0 || max_tokens > room {
        return Err(ServeError::ContextOverflow {
            context: ctx,
            prompt: prompt.len(),
            max_tokens: max_tokens.max(1),
            param: prompt_param,
        });
    }
    // Paid calls hold their most expensive outcome before any compute.
    let billing = Billing::open(
        &s,
        &headers,
        &target,
        &id,
        prompt.len(),
        max_tokens.saturating_mul(common.n),
        attributed_prompt.clone(),
    )?;
    let target = load(&s, &common.model, target).await?;
    let adapter = target.adapter.clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let jobs = (0..common.n)
        .map(|i| {
            let mut sampling = common.sampling.clone();
            sampling.seed = sampling.seed.wrapping_add(i as u64);
            Job {
                adapter: adapter.clone(),
                prompt: prompt.clone(),
                params: GenerateParams {
                    sampling,
                    max_tokens,
                    stop: common.stop.clone(),
                    stop_at_eos: true,
                },
                index: i,
                events: tx.clone(),
            }
        })
        .collect();
    drop(tx);
    // A refused submission (429) drops `billing`, which releases the hold: nothing charged.
    s.engine.submit(jobs)?;
    let meta = Meta {
        id,
        created: now(),
        model: common.model.clone(),
        kind,
        logprobs: common
            .sampling
            .logprobs
            .map(|_| Shaper::new(s.engine.tokenizer().clone())),
    };
    let pay = Pay {
        serve: s.clone(),
        billing,
        target,
        attributed_prompt,
    };
    tracing::debug!(
        n = common.n,
        prompt_tokens = prompt.len(),
        max_tokens,
        stream = common.stream,
        "request queued"
    );
    if common.stream {
        Ok(stream_response(
            meta,
            rx,
            common.n,
            common.include_usage,
            pay,
        ))
    } else {
        whole_response(meta, rx, common.n, pay).await
    }
}

/// What a finished call settles: its billing (paid calls) or a free attribution.
struct Pay {
    serve: Arc<Serve>,
    billing: Option<Billing>,
    target: Target,
    attributed_prompt: String,
}

impl Pay {
    /// Attributes and charges (paid) or attributes (free) on the blocking pool; the
    /// `attribution` object for the response.
    /// `finished`: the call ran to its end (not cancelled).
    async fn finish(
        self,
        texts: Vec<String>,
        completion_tokens: usize,
        finished: bool,
    ) -> Result<Option<Value>, ServeError> {
        tokio::task::spawn_blocking(move || match self.billing {
            Some(b) => b.settle(&self.serve, &texts, completion_tokens, finished),
            None => Ok(attribute_free(
                &self.serve,
                &self.target,
                &self.attributed_prompt,
                &texts,
            )),
        })
        .await
        .map_err(|_| ServeError::EngineStopped)?
    }
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    /// Present when the request asked for logprobs.
    logprobs: Option<Shaper>,
}

impl Meta {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    /// A choice's `logprobs` for these tokens: `null` unless the request asked.
    fn logprobs(&self, lps: &[TokenLogprobs], offset: &mut TextOffset) -> Value {
        match (&self.logprobs, self.kind) {
            (None, _) => Value::Null,
            (Some(s), Kind::Chat) => s.chat(lps),
            (Some(s), Kind::Text) => s.completion(lps, offset),
        }
    }
}

fn usage_json(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn finish_str(f: FinishReason) -> &'static str {
    f.as_str()
}

async fn whole_response(
    meta: Meta,
    mut rx: UnboundedReceiver<(usize, Event)>,
    n: usize,
    pay: Pay,
) -> Result<Response, ServeError> {
    let mut texts = vec![String::new(); n];
    let mut lps: Vec<Vec<TokenLogprobs>> = vec![Vec::new(); n];
    let mut finish = vec![None; n];
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    let mut left = n;
    while left > 0 {
        let Some((i, ev)) = rx.recv().await else {
            return Err(ServeError::EngineStopped);
        };
        match ev {
            Event::Text(t, _) => texts[i].push_str(&t),
            Event::Logprobs(l) => lps[i].extend(l),
            Event::Done {
                finish: f,
                prompt_tokens: p,
                completion_tokens: c,
            } => {
                finish[i] = Some(f);
                prompt_tokens = p;
                completion_tokens += c;
                left -= 1;
            }
            Event::Error(e) => {
                return Err(ServeError::Model(openledger_model::ModelError::Generation(
                    e,
                )))
            }
        }
    }
    // Charged (durably) before the answer leaves; a failed charge answers 503 and charges nothing.
    let attribution = pay.finish(texts.clone(), completion_tokens, true).await?;
    let finish_reasons: Vec<&str> = finish.iter().map(|f| f.map_or("", finish_str)).collect();
    let choices: Vec<Value> = texts
        .into_iter()
        .zip(finish)
        .zip(lps)
        .enumerate()
        .map(|(i, ((text, f), lps))| {
            let reason = f.map(finish_str);
            let logprobs = meta.logprobs(&lps, &mut TextOffset::default());
            match meta.kind {
                Kind::Chat => json!({"index": i, "message": {"role": "assistant", "content": text},
                                     "logprobs": logprobs, "finish_reason": reason}),
                Kind::Text => {
                    json!({"index": i, "text": text, "logprobs": logprobs, "finish_reason": reason})
                }
            }
        })
        .collect();
    tracing::info!(
        prompt_tokens,
        completion_tokens,
        finish = ?finish_reasons,
        "request finished"
    );
    let mut body = json!({
        "id": meta.id, "object": meta.object(false), "created": meta.created, "model": meta.model,
        "choices": choices, "usage": usage_json(prompt_tokens, completion_tokens),
    });
    if let Some(a) = attribution {
        body["attribution"] = a;
    }
    Ok(Json(body).into_response())
}

/// A text piece a chunk delivers: (choice, tokens generated so far, text).
type Piece = (usize, usize, String);

struct StreamState {
    meta: Meta,
    rx: UnboundedReceiver<(usize, Event)>,
    left: usize,
    include_usage: bool,
    prompt_tokens: usize,
    completion_tokens: usize,
    /// Events to send, each with the text piece it delivers.
    pending: VecDeque<(SseEvent, Option<Piece>)>,
    ended: bool,
    /// What each choice's client has been sent: its text and its token count.
    texts: Vec<String>,
    delivered: Vec<usize>,
    /// Per choice (when asked): log-probabilities for its next chunk, and its text offset.
    logprobs: Vec<Vec<TokenLogprobs>>,
    offsets: Vec<TextOffset>,
    /// Settled at the end of the stream, or for what was delivered when the client goes away.
    pay: Option<Pay>,
    /// The request's span: the body is streamed after the handler returned.
    span: tracing::Span,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        if !self.ended {
            self.span
                .in_scope(|| tracing::info!("the client went away before the stream ended"));
        }
        // A client that went away pays for the tokens it received (nothing if none).
        if let Some(pay) = self.pay.take() {
            let texts = std::mem::take(&mut self.texts);
            let tokens: usize = self.delivered.iter().sum();
            let span = self.span.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(
                    async move {
                        if let Err(e) = pay.finish(texts, tokens, false).await {
                            tracing::error!(error = %e, "charging a cancelled stream failed");
                        }
                    }
                    .instrument(span),
                );
            }
        }
    }
}

impl StreamState {
    fn chunk(&self, choices: Value) -> SseEvent {
        let mut v = json!({
            "id": self.meta.id, "object": self.meta.object(true), "created": self.meta.created,
            "model": self.meta.model, "choices": choices,
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        SseEvent::default().data(v.to_string())
    }

    /// Choice `i`'s chunk, with the log-probabilities of the tokens it delivers (a finish chunk
    /// has them only for tokens whose text a stop string cut).
    fn choice(&mut self, i: usize, text: Option<&str>, finish: Option<&str>) -> Value {
        let lps = self
            .logprobs
            .get_mut(i)
            .map(std::mem::take)
            .unwrap_or_default();
        let logprobs = match self.offsets.get_mut(i) {
            Some(offset) if text.is_some() || !lps.is_empty() => self.meta.logprobs(&lps, offset),
            _ => Value::Null,
        };
        match self.meta.kind {
            Kind::Chat => {
                let delta = match text {
                    Some(t) => json!({"content": t}),
                    None => json!({}),
                };
                json!([{"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}])
            }
            Kind::Text => {
                json!([{"index": i, "text": text.unwrap_or(""), "logprobs": logprobs, "finish_reason": finish}])
            }
        }
    }

    fn push(&mut self, e: SseEvent) {
        self.pending.push_back((e, None));
    }

    /// Turns the next engine event into SSE events; false when the stream is over.
    async fn advance(&mut self) -> bool {
        if self.ended {
            return false;
        }
        if self.left == 0 {
            tracing::info!(
                prompt_tokens = self.prompt_tokens,
                completion_tokens = self.completion_tokens,
                "request finished"
            );
            // Charged (durably) before the last chunk; a failed charge ends the stream with an
            // error and charges nothing.
            let attribution = match self.pay.take() {
                Some(pay) => {
                    let texts = std::mem::take(&mut self.texts);
                    match pay.finish(texts, self.completion_tokens, true).await {
                        Ok(a) => a,
                        Err(e) => {
                            self.push(SseEvent::default().data(e.body().to_string()));
                            self.ended = true;
                            return true;
                        }
                    }
                }
                None => None,
            };
            if self.include_usage || attribution.is_some() {
                let mut v = json!({
                    "id": self.meta.id, "object": self.meta.object(true), "created": self.meta.created,
                    "model": self.meta.model, "choices": [],
                });
                if self.include_usage {
                    v["usage"] = usage_json(self.prompt_tokens, self.completion_tokens);
                }
                if let Some(a) = attribution {
                    v["attribution"] = a;
                }
                self.push(SseEvent::default().data(v.to_string()));
            }
            self.push(SseEvent::default().data("[DONE]"));
            self.ended = true;
            return true;
        }
        match self.rx.recv().await {
            None => {
                let e = ServeError::EngineStopped;
                self.push(SseEvent::default().data(e.body().to_string()));
                self.ended = true;
            }
            Some((i, Event::Logprobs(l))) => {
                if let Some(p) = self.logprobs.get_mut(i) {
                    p.extend(l);
                }
            }
            Some((i, Event::Text(t, tokens))) => {
                let choice = self.choice(i, Some(&t), None);
                let c = self.chunk(choice);
                self.pending.push_back((c, Some((i, tokens, t))));
            }
            Some((
                i,
                Event::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                },
            )) => {
                self.left -= 1;
                self.prompt_tokens = prompt_tokens;
                self.completion_tokens += completion_tokens;
                let choice = self.choice(i, None, Some(finish_str(finish)));
                let c = self.chunk(choice);
                self.push(c);
            }
            Some((_, Event::Error(e))) => {
                let e = ServeError::Model(openledger_model::ModelError::Generation(e));
                self.push(SseEvent::default().data(e.body().to_string()));
                self.ended = true;
            }
        }
        true
    }

    /// The next event to send, noting the text it delivers.
    fn pop(&mut self) -> Option<SseEvent> {
        let (e, piece) = self.pending.pop_front()?;
        if let Some((i, tokens, text)) = piece {
            if let (Some(t), Some(d)) = (self.texts.get_mut(i), self.delivered.get_mut(i)) {
                t.push_str(&text);
                *d = tokens;
            }
        }
        Some(e)
    }
}

fn stream_response(
    meta: Meta,
    rx: UnboundedReceiver<(usize, Event)>,
    n: usize,
    include_usage: bool,
    pay: Pay,
) -> Response {
    let mut st = StreamState {
        meta,
        rx,
        left: n,
        include_usage,
        prompt_tokens: 0,
        completion_tokens: 0,
        pending: VecDeque::new(),
        ended: false,
        texts: vec![String::new(); n],
        delivered: vec![0; n],
        logprobs: vec![Vec::new(); n],
        offsets: (0..n).map(|_| TextOffset::default()).collect(),
        pay: Some(pay),
        span: tracing::Span::current(),
    };
    if st.meta.kind == Kind::Chat {
        for i in 0..n {
            let c = st.chunk(
                json!([{"index": i, "delta": {"role": "assistant", "content": ""},
                                     "logprobs": null, "finish_reason": null}]),
            );
            st.push(c);
        }
    }
    let stream = futures_util::stream::unfold(st, |mut st| {
        let span = st.span.clone();
        async move {
            loop {
                if let Some(e) = st.pop() {
                    return Some((Ok::<_, Infallible>(e), st));
                }
                if !st.advance().await {
                    return None;
                }
            }
        }
        .instrument(span)
    });
    Sse::new(stream).into_response()
}

/// Runs a completion handler in a span named by the request's id (the response's `id`) and logs why
/// a request was refused or failed.
async fn traced(
    id: &str,
    route: &'static str,
    handler: impl std::future::Future<Output = Result<Response, ServeError>>,
) -> Result<Response, ServeError> {
    let span = tracing::info_span!(
        "openai_request",
        request_id = id,
        route,
        model = tracing::field::Empty
    );
    let out = handler.instrument(span.clone()).await;
    if let Err(e) = &out {
        span.in_scope(|| tracing::info!(error = %e, "request refused or failed"));
    }
    out
}

async fn chat_completions(
    State(s): State<Arc<Serve>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ServeError> {
    let id = request_id("chatcmpl");
    traced(&id.clone(), "/v1/chat/completions", async move {
        let obj = parse_body(&body)?;
        let mut common = parse_common(&obj)?;
        tracing::Span::current().record("model", common.model.as_str());
        common.sampling.logprobs = logprobs::parse_chat(&obj)?;
        let messages = parse_messages(&obj)?;
        let attributed = last_user_message(&obj);
        let tok = s.engine.tokenizer().clone();
        let prompt = tokio::task::spawn_blocking(move || crate::prompt::chat_ids(&tok, &messages))
            .await
            .map_err(|_| ServeError::EngineStopped)??;
        run(
            s,
            headers,
            Kind::Chat,
            id,
            common,
            prompt,
            "messages",
            attributed,
        )
        .await
    })
    .await
}

async fn completions(
    State(s): State<Arc<Serve>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ServeError> {
    let id = request_id("cmpl");
    traced(&id.clone(), "/v1/completions", async move {
        let obj = parse_body(&body)?;
        let mut common = parse_common(&obj)?;
        tracing::Span::current().record("model", common.model.as_str());
        common.sampling.logprobs = logprobs::parse_completion(&obj)?;
        let text = parse_prompt(&obj)?;
        let attributed = text.clone();
        let tok = s.engine.tokenizer().clone();
        let prompt = tokio::task::spawn_blocking(move || tok.encode(&text, true))
            .await
            .map_err(|_| ServeError::EngineStopped)??;
        run(
            s,
            headers,
            Kind::Text,
            id,
            common,
            prompt,
            "prompt",
            attributed,
        )
        .await
    })
    .await
}

/// The body of a runtime adapter request and its `lora_name`, once the operator allows them.
fn lora_request(s: &Serve, body: &Bytes) -> Result<(Map<String, Value>, String), ServeError> {
    if !s.config.allow_runtime_lora {
        return Err(ServeError::RuntimeLoraOff);
    }
    let obj = parse_body(body)?;
    let name: String = field(&obj, "lora_name")?
        .ok_or_else(|| ServeError::bad("lora_name", "`lora_name` is required"))?;
    Ok((obj, name))
}

/// vLLM's plain-text success answer.
fn lora_done(name: &str, what: &str) -> Response {
    (
        StatusCode::OK,
        format!("Success: LoRA adapter '{name}' {what} successfully."),
    )
        .into_response()
}

async fn load_lora_adapter(
    State(s): State<Arc<Serve>>,
    body: Bytes,
) -> Result<Response, ServeError> {
    let (obj, name) = lora_request(&s, &body)?;
    let path: String = field(&obj, "lora_path")?
        .ok_or_else(|| ServeError::bad("lora_path", "`lora_path` is required"))?;
    if name == s.model_id {
        return Err(ServeError::bad(
            "lora_name",
            "`lora_name` is the base model's id",
        ));
    }
    if path.is_empty() || path.len() > 4096 {
        return Err(ServeError::bad(
            "lora_path",
            "`lora_path` must be 1 to 4096 bytes",
        ));
    }
    s.adapters.load(name.clone(), path.into()).await?;
    Ok(lora_done(&name, "added"))
}

async fn unload_lora_adapter(
    State(s): State<Arc<Serve>>,
    body: Bytes,
) -> Result<Response, ServeError> {
    let (_, name) = lora_request(&s, &body)?;
    s.adapters.unload(&name)?;
    Ok(lora_done(&name, "removed"))
}
