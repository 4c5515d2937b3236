//! Guards on the REST routes, so no client can exhaust the node: signed requests remembered
//! against replay ([`ReplayGuard`]), per-account staging rate limits ([`RateLimiter`]) and a
//! bound on uploads read and ingested at once ([`Guards::ingest`]). Every table here is bounded:
//! entries expire with their windows and a full table turns requests away rather than grow.

use super::{staging::StagingConfig, ApiError};
use alloy_primitives::{Address, B256};
use openledger_types::request_auth::MAX_SKEW_SECS;
use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, MutexGuard},
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The guards of one node, built from its [`StagingConfig`].
pub struct Guards {
    /// Signed requests seen.
    pub replay: ReplayGuard,
    /// Staging rate limits.
    pub rate: RateLimiter,
    /// Slots for uploads being read and ingested.
    pub ingest: tokio::sync::Semaphore,
}

impl Guards {
    /// Guards with `cfg`'s limits, for a node started at `started` (unix seconds).
    pub fn new(cfg: &StagingConfig, started: u64) -> Guards {
        Guards {
            replay: ReplayGuard::new(cfg.max_remembered_requests, cfg.max_signed_per_account)
                .started_at(started),
            rate: RateLimiter::new(cfg),
            ingest: tokio::sync::Semaphore::new(cfg.max_concurrent.max(1)),
        }
    }
}

/// Signed requests accepted while their signatures are valid: a second use is a replay.
pub struct ReplayGuard {
    /// Requests signed before this time (the node's start) are refused: the table that would
    /// tell whether they were already used did not survive the restart.
    started: u64,
    cap: usize,
    per_account: usize,
    seen: Mutex<Seen>,
}

/// The requests remembered, with when each expires, and each account's.
#[derive(Default)]
struct Seen {
    expires: HashMap<B256, u64>,
    by_account: HashMap<Address, Vec<(B256, u64)>>,
}

impl Seen {
    /// Forgets `who`'s expired requests.
    fn expire_account(&mut self, who: &Address, now: u64) {
        let Some(list) = self.by_account.get_mut(who) else {
            return;
        };
        let expires = &mut self.expires;
        list.retain(|(key, at)| {
            let live = *at > now;
            if !live {
                expires.remove(key);
            }
            live
        });
        if list.is_empty() {
            self.by_account.remove(who);
        }
    }

    /// Forgets every expired request.
    fn expire_all(&mut self, now: u64) {
        self.expires.retain(|_, at| *at > now);
        self.by_account.retain(|_, list| {
            list.retain(|(_, at)| *at > now);
            !list.is_empty()
        });
    }
}

impl ReplayGuard {
    /// Remembers at most `cap` requests at once, at most `per_account` of them from one
    /// account.
    pub fn new(cap: usize, per_account: usize) -> ReplayGuard {
        ReplayGuard {
            started: 0,
            cap: cap.max(1),
            per_account: per_account.max(1),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Refuses requests signed before `time` (unix seconds), the node's start.
    pub fn started_at(mut self, time: u64) -> ReplayGuard {
        self.started = time;
        self
    }

    /// Records the signed request `key` by `who`, signed at `time`; refuses it if it was signed
    /// before the node started or seen before (401), when `who` already has `per_account` unexpired requests remembered (429),
    /// or when the table is full of unexpired requests (503).
    pub fn remember(&self, key: B256, who: Address, time: u64, now: u64) -> Result<(), ApiError> {
        if time < self.started {
            return Err(ApiError::Unauthorized(format!(
                "this request was signed at {time}, before the node started at {}: a request signed before a restart could be a replay, so sign it again",
                self.started
            )));
        }
        let mut seen = lock(&self.seen);
        if seen.expires.contains_key(&key) {
            return Err(ApiError::Unauthorized(
                "this signed request was already used: sign every request afresh (a replayed request is refused)".into(),
            ));
        }
        if seen.by_account.get(&who).map_or(0, Vec::len) >= self.per_account {
            seen.expire_account(&who, now);
            if let Some(list) = seen
                .by_account
                .get(&who)
                .filter(|l| l.len() >= self.per_account)
            {
                let retry = list
                    .iter()
                    .map(|(_, at)| at.saturating_sub(now).max(1))
                    .min()
                    .unwrap_or(MAX_SKEW_SECS);
                return Err(ApiError::RateLimited(
                    format!(
                        "{who} has sent {} signed requests in the last {MAX_SKEW_SECS} s, the most the node remembers for one account; retry in {retry} s",
                        list.len()
                    ),
                    retry,
                ));
            }
        }
        if seen.expires.len() >= self.cap {
            seen.expire_all(now);
        }
        if seen.expires.len() >= self.cap {
            return Err(ApiError::Busy(
                "the node is holding too many recent signed requests; retry shortly".into(),
                MAX_SKEW_SECS.min(60),
            ));
        }
        // A request verifies while its time is at most MAX_SKEW_SECS behind the clock, so it
        // is remembered until the first second it no longer does: forgetting it any earlier
        // (a sweep of a full table at time + MAX_SKEW_SECS) would let it be replayed.
        let at = time.saturating_add(MAX_SKEW_SECS + 1).max(now);
        seen.expires.insert(key, at);
        seen.by_account.entry(who).or_default().push((key, at));
        Ok(())
    }

    /// How many requests are remembered.
    pub fn len(&self) -> usize {
        lock(&self.seen).expires.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One account's recent stagings.
#[derive(Default)]
struct Window {
    /// Times of stagings in the last minute.
    starts: VecDeque<u64>,
    /// (time, bytes) of uploads in the last hour.
    bytes: VecDeque<(u64, u64)>,
}

impl Window {
    fn expire(&mut self, now: u64) {
        while self.starts.front().is_some_and(|&t| t + 60 <= now) {
            self.starts.pop_front();
        }
        while self.bytes.front().is_some_and(|&(t, _)| t + 3600 <= now) {
            self.bytes.pop_front();
        }
    }

    fn bytes_used(&self) -> u64 {
        self.bytes
            .iter()
            .map(|&(_, b)| b)
            .fold(0, u64::saturating_add)
    }
}

/// Per-account staging limits: uploads per minute and bytes per hour.
pub struct RateLimiter {
    per_minute: usize,
    bytes_per_hour: u64,
    cap: usize,
    accounts: Mutex<HashMap<Address, Window>>,
}

impl RateLimiter {
    /// Limits from `cfg`.
    pub fn new(cfg: &StagingConfig) -> RateLimiter {
        RateLimiter {
            per_minute: cfg.max_per_minute as usize,
            bytes_per_hour: cfg.max_bytes_per_hour,
            cap: cfg.max_remembered_requests.max(1),
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one staging by `who` at `now`, or refuses it (429, with when to retry).
    pub fn admit(&self, who: Address, now: u64) -> Result<(), ApiError> {
        let mut all = lock(&self.accounts);
        if all.len() >= self.cap && !all.contains_key(&who) {
            all.retain(|_, w| {
                w.expire(now);
                !w.starts.is_empty() || !w.bytes.is_empty()
            });
            if all.len() >= self.cap {
                return Err(ApiError::Busy(
                    "the node is tracking too many staging accounts; retry shortly".into(),
                    60,
                ));
            }
        }
        let w = all.entry(who).or_default();
        w.expire(now);
        if w.starts.len() >= self.per_minute {
            let retry = w
                .starts
                .front()
                .map_or(60, |&t| (t + 60).saturating_sub(now).max(1));
            return Err(ApiError::RateLimited(
                format!(
                    "{who} has staged {} uploads in the last minute, the most allowed; retry in {retry} s",
                    w.starts.len()
                ),
                retry,
            ));
        }
        let used = w.bytes_used();
        if used >= self.bytes_per_hour {
            return Err(self.bytes_refusal(who, w, used, now));
        }
        w.starts.push_back(now);
        Ok(())
    }

    fn bytes_refusal(&self, who: Address, w: &Window, used: u64, now: u64) -> ApiError {
        let retry = w
            .bytes
            .front()
            .map_or(3600, |&(t, _)| (t + 3600).saturating_sub(now).max(1));
        ApiError::RateLimited(
            format!(
                "{who} has uploaded {used} bytes in the last hour; the limit is {} bytes per hour; retry in {retry} s",
                self.bytes_per_hour
            ),
            retry,
        )
    }

    /// Bytes `who` may still upload this hour.
    pub fn bytes_left(&self, who: Address, now: u64) -> u64 {
        let mut all = lock(&self.accounts);
        let w = all.entry(who).or_default();
        w.expire(now);
        self.bytes_per_hour.saturating_sub(w.bytes_used())
    }

    /// The refusal for an upload by `who` of more than it may still send (429).
    pub fn over_hourly(&self, who: Address, now: u64) -> ApiError {
        let mut all = lock(&self.accounts);
        let w = all.entry(who).or_default();
        w.expire(now);
        let used = w.bytes_used();
        self.bytes_refusal(who, w, used, now)
    }

    /// Counts `bytes` uploaded by `who`.
    pub fn charge_bytes(&self, who: Address, now: u64, bytes: u64) {
        let mut all = lock(&self.accounts);
        let w = all.entry(who).or_default();
        w.expire(now);
        w.bytes.push_back((now, bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_accepted_once_and_a_full_table_refuses_until_entries_expire() {
        let g = ReplayGuard::new(2, 100);
        let who = Address::repeat_byte(1);
        let (a, b, c) = (
            B256::repeat_byte(1),
            B256::repeat_byte(2),
            B256::repeat_byte(3),
        );
        g.remember(a, who, 1000, 1000).unwrap();
        let err = g.remember(a, who, 1000, 1001).unwrap_err();
        assert_eq!(err.status(), 401);
        assert!(err.to_string().contains("already used"), "{err}");
        g.remember(b, who, 1000, 1001).unwrap();
        assert_eq!(g.remember(c, who, 1000, 1002).unwrap_err().status(), 503);
        // Once the first two are past their validity they are forgotten.
        g.remember(c, who, 1400, 1000 + MAX_SKEW_SECS + 1).unwrap();
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn a_request_signed_before_the_node_started_is_refused() {
        // The replay table lives in memory: after a restart it cannot know whether a request
        // signed before was already used, so such a request is refused.
        let g = ReplayGuard::new(10, 10).started_at(2_000);
        let who = Address::repeat_byte(1);
        let err = g
            .remember(B256::repeat_byte(1), who, 1_999, 2_001)
            .unwrap_err();
        assert_eq!(err.status(), 401);
        assert!(err.to_string().contains("before the node started"), "{err}");
        g.remember(B256::repeat_byte(2), who, 2_000, 2_001).unwrap();
    }

    #[test]
    fn a_request_is_remembered_through_the_last_second_it_verifies() {
        // verify() accepts a request signed at `time` up to and including
        // now == time + MAX_SKEW_SECS, so it must still be remembered then, even when a full
        // table is swept at that very second.
        let g = ReplayGuard::new(2, 100);
        let who = Address::repeat_byte(1);
        let (a, b, c) = (
            B256::repeat_byte(1),
            B256::repeat_byte(2),
            B256::repeat_byte(3),
        );
        g.remember(a, who, 1000, 1000).unwrap();
        g.remember(b, who, 1000, 1000).unwrap();
        let last = 1000 + MAX_SKEW_SECS;
        assert_eq!(g.remember(c, who, last, last).unwrap_err().status(), 503);
        let replay = g.remember(a, who, 1000, last).unwrap_err();
        assert_eq!(replay.status(), 401, "{replay}");
        // One second later the request no longer verifies, and the table forgets it.
        g.remember(c, who, last + 1, last + 1).unwrap();
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn one_account_cannot_fill_the_replay_table_for_everyone() {
        let g = ReplayGuard::new(100, 10);
        let (spammer, other) = (Address::repeat_byte(0xa), Address::repeat_byte(0xb));
        for i in 0..10u8 {
            g.remember(B256::repeat_byte(i), spammer, 1000 + i as u64, 1000)
                .unwrap();
        }
        let err = g
            .remember(B256::repeat_byte(100), spammer, 1000, 1010)
            .unwrap_err();
        assert_eq!(
            (err.status(), err.retry_after()),
            (429, Some(MAX_SKEW_SECS + 1 - 10)),
            "{err}"
        );
        // Others still get through, and a replay is still told apart.
        g.remember(B256::repeat_byte(200), other, 1000, 1010)
            .unwrap();
        assert_eq!(
            g.remember(B256::repeat_byte(3), other, 1003, 1010)
                .unwrap_err()
                .status(),
            401
        );
        // Once its oldest request expires, the spammer may sign one more.
        let later = 1000 + MAX_SKEW_SECS + 1;
        g.remember(B256::repeat_byte(100), spammer, later, later)
            .unwrap();
        assert_eq!(
            g.remember(B256::repeat_byte(101), spammer, later, later)
                .unwrap_err()
                .status(),
            429
        );
        assert_eq!(g.len(), 11);
    }

    #[test]
    fn stagings_per_minute_and_bytes_per_hour_are_limited_per_account() {
        let cfg = StagingConfig {
            max_per_minute: 2,
            max_bytes_per_hour: 1000,
            ..StagingConfig::default()
        };
        let r = RateLimiter::new(&cfg);
        let (alice, bob) = (Address::repeat_byte(0xa), Address::repeat_byte(0xb));
        r.admit(alice, 100).unwrap();
        r.admit(alice, 110).unwrap();
        let err = r.admit(alice, 120).unwrap_err();
        assert_eq!((err.status(), err.retry_after()), (429, Some(40)));
        r.admit(bob, 120).unwrap();
        r.admit(alice, 160).unwrap();
        r.charge_bytes(alice, 160, 900);
        assert_eq!(r.bytes_left(alice, 170), 100);
        assert_eq!(r.bytes_left(bob, 170), 1000);
        r.charge_bytes(alice, 170, 100);
        let err = r.admit(alice, 300).unwrap_err();
        assert_eq!(err.status(), 429);
        assert!(err.to_string().contains("bytes per hour"), "{err}");
        assert_eq!(r.bytes_left(alice, 160 + 3600), 1000 - 100);
    }
}
