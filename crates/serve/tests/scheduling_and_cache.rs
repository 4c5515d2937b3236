//! The engine's fair admission across adapters and the adapter cache's byte budget, on SmolLM2.

mod common;
use common::*;

use openledger_model::generate::GenerateParams;
use openledger_model::{peft, Device};
use openledger_serve::adapters::adapter_bytes;
use openledger_serve::{EngineConfig, Event, Job, Serve, ServeConfig};
use std::sync::Arc;

fn small_serve(max_batch: usize, cache_bytes: usize) -> Arc<Serve> {
    let shared = serve();
    Serve::new(
        "base".into(),
        shared.engine.model().clone(),
        shared.engine.tokenizer().clone(),
        Device::Cpu,
        ServeConfig {
            engine: EngineConfig {
                max_batch,
                max_waiting: 64,
                ..EngineConfig::default()
            },
            adapter_cache_bytes: cache_bytes,
            ..ServeConfig::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn a_hot_adapter_cannot_starve_a_cold_one() {
    let s = small_serve(1, 1 << 30);
    let model = s.engine.model().clone();
    let hot = Arc::new(token_adapter(&model, pushable_token(&model, 1000), 5));
    let cold = Arc::new(token_adapter(&model, pushable_token(&model, 4000), 6));
    let prompt = s.engine.tokenizer().encode("Hello there", true).unwrap();
    let params = GenerateParams {
        max_tokens: 3,
        stop_at_eos: false,
        ..Default::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let job = |index: usize, name: &str, a: &Arc<_>| Job {
        adapter: Some((name.to_string(), Arc::clone(a))),
        prompt: prompt.clone(),
        params: params.clone(),
        index,
        events: tx.clone(),
    };
    // Six requests for the hot adapter queued ahead of one for the cold adapter; one batch slot.
    let mut jobs: Vec<Job> = (0..6).map(|i| job(i, "hot", &hot)).collect();
    jobs.push(job(6, "cold", &cold));
    s.engine.submit(jobs).unwrap();
    drop(tx);
    let mut order = Vec::new();
    while let Some((i, ev)) = rx.recv().await {
        if let Event::Done { .. } = ev {
            order.push(i);
        }
    }
    assert_eq!(order.len(), 7);
    let cold_at = order.iter().position(|&i| i == 6).unwrap();
    // Round-robin: the cold request is admitted right after the hot one(s) already admitted, not
    // after all six (first-come-first-served would put it last).
    assert!(
        cold_at <= 2,
        "cold adapter finished at position {cold_at}: {order:?}"
    );
}

#[tokio::test]
async fn the_adapter_cache_evicts_least_recently_used_by_bytes() {
    let probe = token_adapter(
        serve().engine.model(),
        pushable_token(serve().engine.model(), 1000),
        1,
    );
    // As the registry holds an adapter: the packed copy only.
    let one = {
        let d = tempfile::tempdir().unwrap();
        peft::save(&probe, d.path()).unwrap();
        adapter_bytes(&peft::load_packed(d.path()).unwrap())
    };
    // Room for two rank-8 adapters, not three.
    let s = small_serve(8, one * 5 / 2);
    let mut dirs = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        peft::save(
            &token_adapter(
                s.engine.model(),
                pushable_token(s.engine.model(), 1000),
                i as u64,
            ),
            dir.path(),
        )
        .unwrap();
        s.adapters
            .load(name.to_string(), dir.path().to_path_buf())
            .await
            .unwrap();
        dirs.push(dir);
    }
    let st = s.adapters.cache_stats();
    assert_eq!((st.cached, st.evictions, st.used_bytes), (2, 1, 2 * one));
    assert_eq!(
        s.adapters.names(),
        ["a", "b", "c"],
        "evicted is still registered"
    );
    // "a" was evicted: reading it again is a miss that reloads it from disk and evicts "b" (the
    // least recently used), so "c" stays a hit.
    assert!(s.adapters.get("a").await.unwrap().is_some());
    assert!(s.adapters.get("c").await.unwrap().is_some());
    let st = s.adapters.cache_stats();
    assert_eq!((st.misses, st.hits, st.evictions), (1, 1, 2));
    assert!(s.adapters.get("b").await.unwrap().is_some());
    assert_eq!(s.adapters.cache_stats().misses, 2);
    // Unloading forgets it and frees its bytes.
    s.adapters.unload("b").unwrap();
    assert!(s.adapters.get("b").await.unwrap().is_none());
    assert_eq!(s.adapters.cache_stats().used_bytes, one);
}

#[tokio::test]
async fn a_pinned_adapter_is_never_evicted() {
    let probe = token_adapter(
        serve().engine.model(),
        pushable_token(serve().engine.model(), 1000),
        1,
    );
    // As the registry holds an adapter: the packed copy only.
    let one = {
        let d = tempfile::tempdir().unwrap();
        peft::save(&probe, d.path()).unwrap();
        adapter_bytes(&peft::load_packed(d.path()).unwrap())
    };
    // Room for two adapters; "pinned" (its owner stakes enough) is used first, so it is the
    // least recently used when the third arrives, and still stays.
    let s = small_serve(8, one * 5 / 2);
    let mut dirs = Vec::new();
    for (i, name) in ["adapter-1", "adapter-2", "adapter-3"].iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        peft::save(
            &token_adapter(
                s.engine.model(),
                pushable_token(s.engine.model(), 1000),
                i as u64,
            ),
            dir.path(),
        )
        .unwrap();
        s.adapters.register_chain(name, dir.path(), i == 0);
        assert!(s.adapters.get(name).await.unwrap().is_some());
        dirs.push(dir);
    }
    assert!(s.adapters.is_pinned("adapter-1"));
    let st = s.adapters.cache_stats();
    assert_eq!((st.cached, st.evictions), (2, 1));
    // adapter-2 went, not the older pinned adapter-1: reading adapter-1 is a hit.
    let hits = st.hits;
    assert!(s.adapters.get("adapter-1").await.unwrap().is_some());
    assert_eq!(s.adapters.cache_stats().hits, hits + 1);
    // Chain adapters are not listed as local ones.
    assert!(s.adapters.names().is_empty());
}

#[tokio::test]
async fn the_active_set_bounds_distinct_adapters_per_batch() {
    // Three adapters, two requests each, eight batch slots: with an active set of one adapter
    // the requests run adapter by adapter (three times the steps), and all of them finish.
    let steps_for = |max_active: usize| async move {
        let shared = serve();
        let s = Serve::new(
            "base".into(),
            shared.engine.model().clone(),
            shared.engine.tokenizer().clone(),
            Device::Cpu,
            ServeConfig {
                engine: EngineConfig {
                    max_batch: 8,
                    max_waiting: 64,
                    max_active_adapters: max_active,
                    ..EngineConfig::default()
                },
                ..ServeConfig::default()
            },
        )
        .unwrap();
        let model = s.engine.model().clone();
        let prompt = s.engine.tokenizer().encode("Hello there", true).unwrap();
        let params = GenerateParams {
            max_tokens: 4,
            stop_at_eos: false,
            ..Default::default()
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut jobs = Vec::new();
        for a in 0..3u64 {
            let adapter = Arc::new(token_adapter(&model, pushable_token(&model, 1000), a));
            for k in 0..2 {
                jobs.push(Job {
                    adapter: Some((format!("a{a}"), adapter.clone())),
                    prompt: prompt.clone(),
                    params: params.clone(),
                    index: (a * 2 + k) as usize,
                    events: tx.clone(),
                });
            }
        }
        s.engine.submit(jobs).unwrap();
        drop(tx);
        let mut done = 0;
        while let Some((_, ev)) = rx.recv().await {
            if let Event::Done { .. } = ev {
                done += 1;
            }
        }
        assert_eq!(done, 6, "every request finishes");
        s.engine
            .stats()
            .steps
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let mixed = steps_for(64).await;
    let one_at_a_time = steps_for(1).await;
    // Each adapter's pair needs 4 steps of its own when only one adapter may be active.
    assert!(
        one_at_a_time >= 3 * 4 && one_at_a_time > mixed,
        "with one active adapter: {one_at_a_time} steps; mixed: {mixed}"
    );
}
