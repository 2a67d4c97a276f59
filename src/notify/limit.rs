//! The per-contact rate limit (SPEC §6): a token bucket per contact. A
//! notification that finds the bucket empty is held; when a token comes
//! back, everything held for that contact goes out as one digest.
//! [`Limiter`] makes those decisions, pure, with the time passed in; the
//! notifier pool carries them out (its digest timers, the outbox).
//!
//! Hand-written rather than `governor` because its time must be tokio's
//! (pausable in tests) and we need "when is the next token?" to schedule the
//! digest, not only "may I now?".

use std::collections::{HashMap, HashSet};
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

/// What the limit says of a notification on its first try.
#[derive(Debug, PartialEq)]
pub enum Admission<T> {
    /// A token was there: send it now.
    Send(T),
    /// Held for the contact's digest. `digest_at`: when the digest is due,
    /// if this is the first held since the last one (start a timer);
    /// `None` when a digest is already scheduled.
    Held { digest_at: Option<Instant> },
}

/// What to do when a contact's digest timer fires.
#[derive(Debug, PartialEq)]
pub enum DigestDue<T> {
    /// Nothing is held for the contact.
    Nothing,
    /// The token is not back yet (the clock rounded): try again then.
    NotYet(Instant),
    /// Everything held for the contact, oldest first, in one digest (which
    /// took the token).
    Send(Vec<T>),
}

/// Every contact's bucket, and what the limit holds for each, by contact key
/// (its address, whatever alarm a notification is for). `T` is what is
/// held: the pool keeps a notification with its outbox time.
#[derive(Debug)]
pub struct Limiter<T> {
    limit: RateLimit,
    /// Buckets of contacts that sent recently (full ones are forgotten).
    buckets: HashMap<String, TokenBucket>,
    /// Held by the limit, per contact, oldest first.
    held: HashMap<String, Vec<T>>,
    /// Contacts whose digest is scheduled.
    digests_due: HashSet<String>,
}

impl<T> Limiter<T> {
    pub fn new(limit: RateLimit) -> Limiter<T> {
        Limiter {
            limit,
            buckets: HashMap::new(),
            held: HashMap::new(),
            digests_due: HashSet::new(),
        }
    }

    /// A notification's first try, at `now`: sent if the contact has a
    /// token, else held.
    pub fn admit(&mut self, key: &str, item: T, now: Instant) -> Admission<T> {
        let limit = self.limit;
        let bucket = self
            .buckets
            .entry(key.to_owned())
            .or_insert_with(|| TokenBucket::new(limit, now));
        if bucket.try_take(now) {
            return Admission::Send(item);
        }
        self.held.entry(key.to_owned()).or_default().push(item);
        let digest_at = self.digests_due.insert(key.to_owned()).then(|| bucket.next_token(now));
        Admission::Held { digest_at }
    }

    /// The contact's digest timer fired at `now`.
    pub fn digest_due(&mut self, key: &str, now: Instant) -> DigestDue<T> {
        self.digests_due.remove(key);
        let Some(held) = self.held.remove(key).filter(|h| !h.is_empty()) else {
            return DigestDue::Nothing;
        };
        if let Some(bucket) = self.buckets.get_mut(key) {
            if !bucket.try_take(now) {
                let at = bucket.next_token(now);
                self.held.insert(key.to_owned(), held);
                self.digests_due.insert(key.to_owned());
                return DigestDue::NotYet(at);
            }
        }
        DigestDue::Send(held)
    }

    /// Forgets buckets that are full again at `now` (and hold nothing), so
    /// idle contacts cost nothing.
    pub fn forget_full(&mut self, now: Instant) {
        let held = &self.held;
        self.buckets
            .retain(|key, bucket| held.contains_key(key) || !bucket.is_full(now));
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

    // ---- the limiter: what is sent, held, and folded into a digest ----

    /// 2 messages per minute: a token every 30 s.
    const TWO_A_MINUTE: RateLimit = RateLimit {
        messages: 2,
        window: Duration::from_secs(60),
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn within_the_limit_everything_is_sent() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(TWO_A_MINUTE);
        assert_eq!(limiter.admit("jill", 1, t0), Admission::Send(1));
        assert_eq!(limiter.admit("jill", 2, t0 + secs(1)), Admission::Send(2));
        // A token every 30 s: the third waits for it, not for a whole window.
        assert_eq!(limiter.admit("jill", 3, t0 + secs(30)), Admission::Send(3));
    }

    #[test]
    fn beyond_the_limit_notifications_are_held_and_the_first_held_schedules_the_digest() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(TWO_A_MINUTE);
        limiter.admit("jill", 1, t0);
        limiter.admit("jill", 2, t0);
        assert_eq!(
            limiter.admit("jill", 3, t0 + secs(5)),
            Admission::Held {
                digest_at: Some(t0 + secs(30))
            }
        );
        assert_eq!(
            limiter.admit("jill", 4, t0 + secs(10)),
            Admission::Held { digest_at: None },
            "its digest is scheduled already"
        );
        // The digest takes the token and everything held, oldest first.
        assert_eq!(limiter.digest_due("jill", t0 + secs(30)), DigestDue::Send(vec![3, 4]));
        // The next one finds no token again: a new digest, a token later.
        assert_eq!(
            limiter.admit("jill", 5, t0 + secs(31)),
            Admission::Held {
                digest_at: Some(t0 + secs(60))
            }
        );
        assert_eq!(limiter.digest_due("jill", t0 + secs(60)), DigestDue::Send(vec![5]));
    }

    #[test]
    fn a_digest_due_before_its_token_waits_for_it_and_keeps_what_it_holds() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(TWO_A_MINUTE);
        limiter.admit("jill", 1, t0);
        limiter.admit("jill", 2, t0);
        limiter.admit("jill", 3, t0);
        // The timer fired a little early (the clock rounded).
        let early = t0 + secs(30) - Duration::from_millis(1);
        assert_eq!(limiter.digest_due("jill", early), DigestDue::NotYet(t0 + secs(30)));
        // Still scheduled: more is held without a second timer.
        assert_eq!(limiter.admit("jill", 4, early), Admission::Held { digest_at: None });
        assert_eq!(limiter.digest_due("jill", t0 + secs(30)), DigestDue::Send(vec![3, 4]));
    }

    #[test]
    fn a_digest_with_nothing_held_sends_nothing() {
        let t0 = Instant::now();
        let mut limiter: Limiter<u32> = Limiter::new(TWO_A_MINUTE);
        assert_eq!(limiter.digest_due("jill", t0), DigestDue::Nothing);
        limiter.admit("jill", 1, t0);
        assert_eq!(limiter.digest_due("jill", t0), DigestDue::Nothing, "sent, not held");
    }

    #[test]
    fn each_contact_has_its_own_limit_and_digest() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(TWO_A_MINUTE);
        for n in 1..=3 {
            limiter.admit("jill", n, t0);
        }
        assert_eq!(limiter.admit("bob", 10, t0), Admission::Send(10));
        assert_eq!(limiter.admit("bob", 11, t0), Admission::Send(11));
        assert_eq!(
            limiter.admit("bob", 12, t0 + secs(15)),
            Admission::Held {
                digest_at: Some(t0 + secs(30))
            },
            "bob's digest is his own"
        );
        assert_eq!(limiter.digest_due("bob", t0 + secs(30)), DigestDue::Send(vec![12]));
        assert_eq!(limiter.digest_due("jill", t0 + secs(30)), DigestDue::Send(vec![3]));
    }

    #[test]
    fn full_buckets_are_forgotten_but_not_those_of_contacts_with_something_held() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(TWO_A_MINUTE);
        limiter.admit("idle", 1, t0);
        for n in 1..=3 {
            limiter.admit("busy", n, t0);
        }
        limiter.forget_full(t0 + secs(15));
        assert_eq!(limiter.buckets.len(), 2, "neither is full yet");
        limiter.forget_full(t0 + secs(600));
        assert!(
            limiter.buckets.contains_key("busy"),
            "its digest still needs its bucket"
        );
        assert!(!limiter.buckets.contains_key("idle"));
        // Forgotten is full: the idle contact may send its whole limit again.
        assert_eq!(limiter.admit("idle", 2, t0 + secs(600)), Admission::Send(2));
        assert_eq!(limiter.admit("idle", 3, t0 + secs(600)), Admission::Send(3));
        assert_eq!(limiter.digest_due("busy", t0 + secs(600)), DigestDue::Send(vec![3]));
    }
}
