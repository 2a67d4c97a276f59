//! The per-contact rate limit (SPEC §6): a token bucket per contact. A
//! notification that finds the bucket empty is held; when a token comes
//! back, everything held for that contact goes out as one digest.
//!
//! Hand-written rather than `governor` because its time must be tokio's
//! (pausable in tests) and we need "when is the next token?" to schedule the
//! digest, not only "may I now?".

use std::time::Duration;

use tokio::time::Instant;

/// N messages per window, refilled smoothly (one token every window / N).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub messages: u32,
    pub window: Duration,
}

impl RateLimit {
    fn refill_every(&self) -> Duration {
        self.window / self.messages.max(1)
    }
}

/// One contact's bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: u32,
    /// When the last token was added (or the bucket was full).
    refilled: Instant,
}

impl TokenBucket {
    pub fn new(limit: RateLimit, now: Instant) -> TokenBucket {
        TokenBucket {
            limit,
            tokens: limit.messages,
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let every = self.limit.refill_every();
        if every.is_zero() {
            self.tokens = self.limit.messages;
            return;
        }
        let elapsed = now.saturating_duration_since(self.refilled);
        let earned = (elapsed.as_nanos() / every.as_nanos()) as u64;
        if earned == 0 {
            return;
        }
        let tokens = (self.tokens as u64 + earned).min(self.limit.messages as u64) as u32;
        self.tokens = tokens;
        self.refilled = if tokens == self.limit.messages {
            now
        } else {
            self.refilled + every * earned as u32
        };
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }

    /// When the next token will be there (now if there is one).
    pub fn next_token(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens > 0 {
            now
        } else {
            self.refilled + self.limit.refill_every()
        }
    }

    /// A full bucket can be forgotten.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens == self.limit.messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        messages: 10,
        window: Duration::from_secs(600),
    };

    #[test]
    fn a_full_bucket_gives_its_messages_then_refuses() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, t0);
        for _ in 0..10 {
            assert!(bucket.try_take(t0));
        }
        assert!(!bucket.try_take(t0));
        assert_eq!(bucket.next_token(t0), t0 + Duration::from_secs(60));
    }

    #[test]
    fn tokens_come_back_one_per_window_share_and_never_beyond_full() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(LIMIT, t0);
        for _ in 0..10 {
            bucket.try_take(t0);
        }
        assert!(!bucket.try_take(t0 + Duration::from_secs(59)));
        assert!(bucket.try_take(t0 + Duration::from_secs(60)));
        assert!(!bucket.try_take(t0 + Duration::from_secs(61)));
        let later = t0 + Duration::from_secs(10_000);
        assert!(bucket.is_full(later));
        for _ in 0..10 {
            assert!(bucket.try_take(later));
        }
        assert!(!bucket.try_take(later));
    }
}
