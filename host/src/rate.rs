//! Rate limits of providers and protocols: at most so many calls per
//! minute, so many tokens per minute (as the calls' results report them),
//! and a pause when a backend says to come back later (429 with
//! `Retry-After`). A task over a limit waits in the queue; it is not failed
//! and its wait is not an attempt.
//!
//! Calls are spaced evenly (the generic cell rate algorithm): with 300 per
//! minute one may start every 200 ms, so no window of a minute ever holds
//! more than 300, whatever the backend counts in. Tokens are a bucket of a
//! minute's worth that refills continuously; a call may start while it
//! holds any, and its usage is taken out when it ends (so one large answer
//! may overdraw it, and the next calls wait until it refills).
//!
//! Hosts of a cluster each keep their own limiters; those that use one
//! share its limits: each takes an equal part ([`Limiter::set_share`],
//! which the cluster's beat sets from which hosts used it lately), so that
//! together they stay within what the backend allows.
//!
//! It owns the arithmetic of limits and nothing else: the registry keeps a
//! limiter per provider and per protocol, the engine asks before a call and
//! reports after it.

use crate::locks::lock;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most a limit may be set to (per minute).
pub const MAX_PER_MINUTE: u32 = 1_000_000_000;

/// Limits as the settings name them: `requests_per_minute`,
/// `tokens_per_minute`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u32>,
}

impl RateLimit {
    /// What is wrong with it, if anything.
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in
            [("requests_per_minute", self.requests_per_minute), ("tokens_per_minute", self.tokens_per_minute)]
        {
            if value.is_some_and(|n| n == 0 || n > MAX_PER_MINUTE) {
                return Err(format!("{name} must be from 1 to {MAX_PER_MINUTE}"));
            }
        }
        Ok(())
    }

    pub fn is_none(&self) -> bool {
        self.requests_per_minute.is_none() && self.tokens_per_minute.is_none()
    }
}

/// Why a call must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Requests(u32),
    Tokens(u32),
    /// The backend asked for a pause (Retry-After).
    Paused,
}

impl std::fmt::Display for Limited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limited::Requests(n) => write!(f, "{n} requests per minute"),
            Limited::Tokens(n) => write!(f, "{n} tokens per minute"),
            Limited::Paused => f.write_str("the backend asked to wait (Retry-After)"),
        }
    }
}

/// One limiter's state: shared by the calls it limits.
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the next call may start (calls per minute).
    next_call: Instant,
    /// Tokens left, as of `tokens_at`.
    tokens: f64,
    tokens_at: Instant,
    paused_until: Option<Instant>,
    /// This host's part of the limits, from 0 (excluded) to 1 (alone).
    share: f64,
    /// When a call last asked to start.
    wanted_at: Option<Instant>,
}

impl State {
    /// `per_minute` of the limits, this host's part of it.
    fn part(&self, per_minute: u32) -> f64 {
        f64::from(per_minute) * self.share
    }
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Self {
        let now = Instant::now();
        let tokens = limit.tokens_per_minute.map_or(0.0, f64::from);
        let state = State { next_call: now, tokens, tokens_at: now, paused_until: None, share: 1.0, wanted_at: None };
        Self { limit, state: Mutex::new(state) }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// None if a call may start at `now`; else when one may, and why not now.
    pub fn wait(&self, now: Instant) -> Option<(Instant, Limited)> {
        let mut state = lock(&self.state);
        state.wanted_at = Some(now);
        if let Some(until) = state.paused_until.filter(|until| *until > now) {
            return Some((until, Limited::Paused));
        }
        if let Some(rpm) = self.limit.requests_per_minute
            && state.next_call > now
        {
            return Some((state.next_call, Limited::Requests(rpm)));
        }
        if let Some(tpm) = self.limit.tokens_per_minute {
            let tokens = refilled(&mut state, tpm, now);
            if tokens <= 0.0 {
                let per_second = state.part(tpm) / 60.0;
                let wait = Duration::from_secs_f64((1.0 - tokens) / per_second);
                return Some((now + wait, Limited::Tokens(tpm)));
            }
        }
        None
    }

    /// A call starts at `now`.
    pub fn take(&self, now: Instant) {
        if let Some(rpm) = self.limit.requests_per_minute {
            let mut state = lock(&self.state);
            let interval = Duration::from_secs_f64(60.0 / state.part(rpm));
            state.next_call = state.next_call.max(now) + interval;
        }
    }

    /// A call ended at `now` having used `tokens`.
    pub fn spend(&self, tokens: u64, now: Instant) {
        if let Some(tpm) = self.limit.tokens_per_minute {
            let mut state = lock(&self.state);
            refilled(&mut state, tpm, now);
            state.tokens -= tokens as f64;
        }
    }

    /// The backend asked that no call start before `until`.
    pub fn pause(&self, until: Instant) {
        let mut state = lock(&self.state);
        state.paused_until = Some(state.paused_until.map_or(until, |was| was.max(until)));
    }

    /// Take `share` of the limits (a cluster's hosts that use them share
    /// them): from 1 (all) down to a thousandth.
    pub fn set_share(&self, share: f64) {
        let mut state = lock(&self.state);
        state.share = share.clamp(MIN_SHARE, 1.0);
        let most = state.part(self.limit.tokens_per_minute.unwrap_or(0));
        state.tokens = state.tokens.min(most);
    }

    /// Whether it limits anything and a call asked to start since `since`.
    pub fn wanted_since(&self, since: Instant) -> bool {
        !self.limit.is_none() && lock(&self.state).wanted_at.is_some_and(|at| at >= since)
    }
}

/// The least part of a limit a host takes.
const MIN_SHARE: f64 = 0.001;

/// The tokens left at `now`, the bucket refilled since it was last looked at.
fn refilled(state: &mut State, tpm: u32, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(state.tokens_at).as_secs_f64();
    let tpm = state.part(tpm);
    state.tokens = (state.tokens + elapsed * tpm / 60.0).min(tpm);
    state.tokens_at = now;
    state.tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rpm: Option<u32>, tpm: Option<u32>) -> Limiter {
        Limiter::new(RateLimit { requests_per_minute: rpm, tokens_per_minute: tpm })
    }

    #[test]
    fn calls_are_spaced_evenly() {
        let l = limiter(Some(300), None);
        let t0 = Instant::now();
        assert_eq!(l.wait(t0), None);
        l.take(t0);
        let (when, why) = l.wait(t0).unwrap();
        assert_eq!((when - t0, why), (Duration::from_millis(200), Limited::Requests(300)));
        assert_eq!(l.wait(t0 + Duration::from_millis(200)), None);
        // A quiet spell does not store up a burst.
        let later = t0 + Duration::from_secs(60);
        l.take(later);
        assert!(l.wait(later).is_some());
    }

    #[test]
    fn tokens_wait_for_the_bucket_to_refill() {
        let l = limiter(None, Some(600)); // 10 a second
        let t0 = Instant::now();
        assert_eq!(l.wait(t0), None);
        l.spend(650, t0);
        let (when, why) = l.wait(t0).unwrap();
        assert_eq!(why, Limited::Tokens(600));
        assert!((when - t0).as_secs_f64() > 5.0 && (when - t0).as_secs_f64() < 5.2, "{:?}", when - t0);
        assert_eq!(l.wait(t0 + Duration::from_secs(6)), None);
    }

    #[test]
    fn a_share_of_the_limits_is_that_part_of_them() {
        let l = limiter(Some(300), Some(600));
        let t0 = Instant::now();
        assert!(!l.wanted_since(t0));
        l.set_share(1.0 / 3.0);
        assert_eq!(l.wait(t0), None);
        assert!(l.wanted_since(t0));
        l.take(t0);
        let (when, _) = l.wait(t0).unwrap();
        assert_eq!((when - t0).as_millis(), 600, "100 a minute: one every 600 ms");
        // The bucket holds a third of a minute's tokens, refilled at that pace.
        // (200 left, 210 spent; 2 back after 600 ms, 1 more wanted: 2.7 s.)
        l.spend(210, t0);
        let (when, why) = l.wait(t0 + Duration::from_millis(600)).unwrap();
        assert_eq!(why, Limited::Tokens(600));
        assert!((when - t0).as_secs_f64() > 3.25 && (when - t0).as_secs_f64() < 3.35, "{:?}", when - t0);
        assert!(!limiter(None, None).wanted_since(t0), "no limits, nothing to share");
    }

    #[test]
    fn a_pause_holds_every_call_until_it_ends() {
        let l = limiter(None, None);
        let t0 = Instant::now();
        l.pause(t0 + Duration::from_secs(2));
        l.pause(t0 + Duration::from_secs(1));
        assert_eq!(l.wait(t0), Some((t0 + Duration::from_secs(2), Limited::Paused)));
        assert_eq!(l.wait(t0 + Duration::from_secs(2)), None);
    }

    #[test]
    fn limits_are_checked() {
        assert!(RateLimit { requests_per_minute: Some(0), tokens_per_minute: None }.check().is_err());
        assert!(RateLimit { requests_per_minute: Some(300), tokens_per_minute: Some(90_000) }.check().is_ok());
    }
}
