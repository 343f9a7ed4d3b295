//! Telegram's rate limits, kept on Herald's side so the Bot API never has to answer 429: about one message a
//! second per chat, twenty a minute per group, thirty a second in all (core.telegram.org/bots/faq, "My bot is
//! hitting limits"). Each is a GCRA bucket (governor) without bursts, so the spacing holds over any window.
//!
//! The limits are per process: several delivery processes sharing one bot token should divide `overall`
//! between them (the settings say how).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Messages per period; `0` turns that limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelegramLimits {
    pub per_chat_per_sec: u32,
    pub per_group_per_min: u32,
    pub overall_per_sec: u32,
}

impl Default for TelegramLimits {
    fn default() -> Self {
        Self {
            per_chat_per_sec: 1,
            per_group_per_min: 20,
            overall_per_sec: 30,
        }
    }
}

pub struct TelegramLimiter {
    overall: Option<DefaultDirectRateLimiter>,
    chats: Option<DefaultKeyedRateLimiter<i64>>,
    groups: Option<DefaultKeyedRateLimiter<i64>>,
    clock: DefaultClock,
}

fn quota(n: u32, per: Duration) -> Option<Quota> {
    let n = NonZeroU32::new(n)?;
    // No burst: one cell every per/n.
    Quota::with_period(per / n.get()).map(|q| q.allow_burst(NonZeroU32::MIN))
}

impl TelegramLimiter {
    pub fn new(limits: TelegramLimits) -> Self {
        let second = Duration::from_secs(1);
        Self {
            overall: quota(limits.overall_per_sec, second).map(RateLimiter::direct),
            chats: quota(limits.per_chat_per_sec, second).map(RateLimiter::keyed),
            groups: quota(limits.per_group_per_min, Duration::from_secs(60))
                .map(RateLimiter::keyed),
            clock: DefaultClock::default(),
        }
    }

    /// Wait for a slot in the overall limit.
    pub async fn overall_slot(&self) {
        if let Some(overall) = &self.overall {
            overall.until_ready().await;
        }
    }

    /// Take a slot for one message to `chat_id` now, or say how long until there is one. Group chats (negative
    /// ids) count against both their chat and their group bucket.
    pub fn chat_slot(&self, chat_id: i64) -> Result<(), Duration> {
        if let Some(chats) = &self.chats {
            chats
                .check_key(&chat_id)
                .map_err(|not_until| not_until.wait_time_from(self.clock.now()))?;
        }
        if chat_id < 0 {
            if let Some(groups) = &self.groups {
                groups
                    .check_key(&chat_id)
                    .map_err(|not_until| not_until.wait_time_from(self.clock.now()))?;
            }
        }
        Ok(())
    }

    /// Forget idle chats (the keyed buckets otherwise grow with every chat ever written to).
    pub fn shrink(&self) {
        if let Some(chats) = &self.chats {
            chats.retain_recent();
        }
        if let Some(groups) = &self.groups {
            groups.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_gets_one_message_a_second() {
        let limiter = TelegramLimiter::new(TelegramLimits::default());
        assert!(limiter.chat_slot(7).is_ok());
        let wait = limiter.chat_slot(7).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(limiter.chat_slot(8).is_ok(), "other chats are not held up");
    }

    #[test]
    fn a_group_gets_twenty_a_minute() {
        let limiter = TelegramLimiter::new(TelegramLimits {
            per_chat_per_sec: 0,
            ..TelegramLimits::default()
        });
        assert!(limiter.chat_slot(-100).is_ok());
        let wait = limiter.chat_slot(-100).unwrap_err();
        assert!(wait > Duration::from_millis(2900), "{wait:?}");
        assert!(limiter.chat_slot(100).is_ok() && limiter.chat_slot(100).is_ok());
    }

    #[tokio::test]
    async fn the_overall_limit_spaces_messages() {
        let limiter = TelegramLimiter::new(TelegramLimits {
            overall_per_sec: 50,
            ..TelegramLimits::default()
        });
        let start = std::time::Instant::now();
        for _ in 0..11 {
            limiter.overall_slot().await;
        }
        assert!(
            start.elapsed() >= Duration::from_millis(190),
            "{:?}",
            start.elapsed()
        );
    }
}
