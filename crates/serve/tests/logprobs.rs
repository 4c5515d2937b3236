//! OpenAI `logprobs` over the real SmolLM2: chat (`logprobs` + `top_logprobs`) and text
//! completions (`logprobs: N`), whole and streamed, against what a client relies on: the chosen
//! token under greedy decoding is the most likely one, log-probabilities are <= 0 and their mass
//! <= 1, the tokens spell the returned text, streaming carries the same tokens chunk by chunk,
//! the values are the model's raw ones (not tempered) and bad parameters are 400.

mod common;
use common::*;

use axum::http::StatusCode;
use serde_json::{json, Value};

fn base_id() -> String {
    serve().model_id.clone()
}

/// Floats as JSON carries them.
fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn bytes(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap_or_else(|| panic!("no bytes: {v}"))
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect()
}

/// The streamed chunks of a request (without `[DONE]`).
async fn stream(path: &str, mut req: Value) -> Vec<Value> {
    req["stream"] = json!(true);
    let (status, body) = post_raw(path, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Checks one chat `logprobs.content` entry; returns its bytes.
fn check_chat_entry(e: &Value, top: usize) -> Vec<u8> {
    let lp = f(&e["logprob"]);
    assert!(lp <= 0.0, "{e}");
    let tops = e["top_logprobs"].as_array().unwrap();
    assert_eq!(tops.len(), top, "{e}");
    for w in tops.windows(2) {
        assert!(f(&w[0]["logprob"]) >= f(&w[1]["logprob"]), "sorted: {e}");
    }
    let mass: f64 = tops.iter().map(|t| f(&t["logprob"]).exp()).sum();
    assert!(mass <= 1.0 + 1e-6, "top mass {mass}: {e}");
    for t in tops {
        let b = bytes(&t["bytes"]);
        assert_eq!(t["token"], String::from_utf8_lossy(&b).as_ref(), "{t}");
    }
    let b = bytes(&e["bytes"]);
    assert_eq!(e["token"], String::from_utf8_lossy(&b).as_ref(), "{e}");
    b
}

#[tokio::test]
async fn greedy_chat_logprobs_pick_the_most_likely_token_and_spell_the_answer() {
    let req = json!({"model": base_id(), "messages": [{"role": "user", "content": "Name three fruits."}],
                     "temperature": 0, "max_tokens": 24, "logprobs": true, "top_logprobs": 5});
    let (status, v) = post("/v1/chat/completions", req.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let choice = &v["choices"][0];
    let text = choice["message"]["content"].as_str().unwrap();
    let content = choice["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        content.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap(),
        "one entry per completion token"
    );
    let mut spelled = Vec::new();
    for e in content {
        spelled.extend(check_chat_entry(e, 5));
        // Greedy: the chosen token is the most likely one.
        let best = &e["top_logprobs"][0];
        assert_eq!(e["token"], best["token"], "{e}");
        assert_eq!(f(&e["logprob"]), f(&best["logprob"]), "{e}");
    }
    assert_eq!(String::from_utf8(spelled).unwrap(), text);
    let tokens: String = content
        .iter()
        .map(|e| e["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens, text);

    // Streamed: the same tokens and values; each chunk carries the tokens of its own text.
    let chunks = stream("/v1/chat/completions", req).await;
    let mut streamed = Vec::new();
    for c in &chunks {
        let Some(ch) = c["choices"].get(0) else {
            continue;
        };
        let Some(piece) = ch["delta"]["content"].as_str().filter(|p| !p.is_empty()) else {
            assert!(ch["logprobs"].is_null(), "no text, no tokens: {c}");
            continue;
        };
        let entries = ch["logprobs"]["content"].as_array().unwrap();
        let chunk_bytes: Vec<u8> = entries.iter().flat_map(|e| bytes(&e["bytes"])).collect();
        assert_eq!(String::from_utf8(chunk_bytes).unwrap(), piece, "{c}");
        streamed.extend(entries.iter().cloned());
    }
    assert_eq!(streamed.len(), content.len());
    for (s, w) in streamed.iter().zip(content) {
        assert_eq!(s["token"], w["token"]);
        assert!(
            (f(&s["logprob"]) - f(&w["logprob"])).abs() < 1e-4,
            "{s} vs {w}"
        );
        let names = |e: &Value| -> Vec<Value> {
            e["top_logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["token"].clone())
                .collect()
        };
        assert_eq!(names(s).len(), 5);
        assert_eq!(names(s)[0], names(w)[0]);
    }
}

#[tokio::test]
async fn completion_logprobs_have_openais_legacy_shape_whole_and_streamed() {
    let req = json!({"model": base_id(), "prompt": "The capital of France is", "temperature": 0,
                     "max_tokens": 12, "logprobs": 3});
    let (status, v) = post("/v1/completions", req.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let choice = &v["choices"][0];
    let text = choice["text"].as_str().unwrap();
    let lp = &choice["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens.concat(), text);
    assert_eq!(
        tokens.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let mut offset = 0;
    for (j, t) in tokens.iter().enumerate() {
        assert_eq!(lp["text_offset"][j].as_u64().unwrap(), offset, "{lp}");
        offset += t.chars().count() as u64;
        let chosen = f(&lp["token_logprobs"][j]);
        assert!(chosen <= 0.0);
        let top = lp["top_logprobs"][j].as_object().unwrap();
        assert!((1..=4).contains(&top.len()), "{top:?}");
        // Greedy: the chosen token is among them, and the most likely.
        assert_eq!(top.get(*t).map(f), Some(chosen), "{top:?}");
        let max = top.values().map(f).fold(f64::MIN, f64::max);
        assert_eq!(chosen, max);
        assert!(top.values().map(|l| f(l).exp()).sum::<f64>() <= 1.0 + 1e-6);
    }

    let chunks = stream("/v1/completions", req).await;
    let (mut s_tokens, mut s_logprobs, mut s_offsets) = (vec![], vec![], vec![]);
    for c in &chunks {
        let Some(ch) = c["choices"].get(0) else {
            continue;
        };
        if ch["logprobs"].is_null() {
            continue;
        }
        let l = &ch["logprobs"];
        let toks: Vec<&str> = l["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(toks.concat(), ch["text"].as_str().unwrap(), "{c}");
        s_tokens.extend(toks.iter().map(|t| t.to_string()));
        s_logprobs.extend(l["token_logprobs"].as_array().unwrap().iter().map(f));
        s_offsets.extend(l["text_offset"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(s_tokens, tokens);
    assert_eq!(
        &Value::from(s_offsets),
        &lp["text_offset"],
        "offsets run on"
    );
    for (s, w) in s_logprobs
        .iter()
        .zip(lp["token_logprobs"].as_array().unwrap())
    {
        assert!((s - f(w)).abs() < 1e-4);
    }
}

#[tokio::test]
async fn a_stop_string_cut_keeps_every_generated_token_streamed_or_not() {
    let base = json!({"model": base_id(), "prompt": "Bees make honey because", "temperature": 0,
                      "max_tokens": 16, "logprobs": 0});
    let (status, v) = post("/v1/completions", base.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let full = v["choices"][0]["text"].as_str().unwrap().to_string();
    let full_tokens: Vec<String> = v["choices"][0]["logprobs"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    // A stop string made of one token's last character and the next token's first, first seen
    // there: when that token arrives its last character may begin the stop string, so its text
    // is held back (and its logprobs with it) until the next token decides.
    let (stop, cut) = (1..full_tokens.len().saturating_sub(1))
        .find_map(|j| {
            let end: usize = full_tokens[..=j].iter().map(String::len).sum();
            let last = full_tokens[j].chars().last()?;
            let next = full_tokens[j + 1].chars().next()?;
            let stop = format!("{last}{next}");
            let at = end - last.len_utf8();
            (full.find(&stop) == Some(at)).then_some((stop, at))
        })
        .expect("an answer with a usable stop string");
    let mut req = base.clone();
    req["stop"] = json!([stop]);
    let (status, v) = post("/v1/completions", req.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert_eq!(text, &full[..cut], "stop {stop:?}");
    let tokens: Vec<String> = v["choices"][0]["logprobs"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        tokens.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let spelled = tokens.concat();
    assert!(
        spelled.starts_with(text) && full.starts_with(&spelled),
        "{spelled:?}"
    );

    // Streamed: the same tokens, never sent ahead of their text (until the stop string ends it).
    let (mut streamed, mut sent_text) = (Vec::new(), String::new());
    for ch in stream("/v1/completions", req)
        .await
        .iter()
        .filter_map(|c| c["choices"].get(0))
    {
        sent_text.push_str(ch["text"].as_str().unwrap());
        if !ch["logprobs"].is_null() {
            let toks = ch["logprobs"]["tokens"].as_array().unwrap();
            streamed.extend(toks.iter().map(|t| t.as_str().unwrap().to_string()));
        }
        if ch["finish_reason"].is_null() {
            assert!(
                sent_text.starts_with(&streamed.concat()),
                "{streamed:?} ahead of {sent_text:?}"
            );
        }
    }
    assert_eq!(streamed, tokens);
}

#[tokio::test]
async fn logprobs_are_the_models_raw_distribution_whatever_the_temperature() {
    let first = |temperature: f64| {
        json!({"model": base_id(), "messages": [{"role": "user", "content": "Say hello."}],
               "temperature": temperature, "seed": 3, "max_tokens": 1, "logprobs": true,
               "top_logprobs": 4})
    };
    let (s0, cold) = post("/v1/chat/completions", first(0.0)).await;
    let (s1, hot) = post("/v1/chat/completions", first(1.8)).await;
    assert_eq!((s0, s1), (StatusCode::OK, StatusCode::OK), "{cold} {hot}");
    let tops = |v: &Value| -> Vec<(String, f64)> {
        v["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["token"].as_str().unwrap().to_string(), f(&t["logprob"])))
            .collect()
    };
    let (a, b) = (tops(&cold), tops(&hot));
    assert_eq!(a.len(), 4);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.0, y.0);
        assert!((x.1 - y.1).abs() < 1e-4, "{a:?} vs {b:?}");
    }
}

#[tokio::test]
async fn no_logprobs_unless_asked() {
    let (status, v) = post(
        "/v1/chat/completions",
        json!({"model": base_id(), "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["choices"][0]["logprobs"].is_null(), "{v}");
    let (status, v) = post(
        "/v1/completions",
        json!({"model": base_id(), "prompt": "Hi", "max_tokens": 3, "logprobs": null}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["choices"][0]["logprobs"].is_null(), "{v}");
}

#[tokio::test]
async fn out_of_range_logprobs_parameters_are_400_naming_the_param() {
    let msgs = json!([{"role": "user", "content": "Hi"}]);
    let chat = [
        (
            json!({"logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (json!({"top_logprobs": 2}), "top_logprobs"),
        (
            json!({"logprobs": false, "top_logprobs": 1}),
            "top_logprobs",
        ),
        (json!({"logprobs": "yes"}), "logprobs"),
    ];
    for (extra, param) in chat {
        let mut req = json!({"model": base_id(), "messages": msgs, "max_tokens": 2});
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        let (status, v) = post("/v1/chat/completions", req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{extra}: {v}");
        assert_eq!(v["error"]["param"], param, "{extra}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    for bad in [json!(6), json!(-1), json!(true)] {
        let (status, v) = post(
            "/v1/completions",
            json!({"model": base_id(), "prompt": "Hi", "max_tokens": 2, "logprobs": bad}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(v["error"]["param"], "logprobs", "{bad}: {v}");
    }
}
