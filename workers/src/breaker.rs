//! A circuit breaker per delivery channel. When a provider is down (timeouts, 5xx), every queued notification
//! would otherwise burn one of its attempts per turn and land in the dead-letter queue together. After
//! `threshold` consecutive outages the breaker opens: the workers claim nothing of that channel for `cooldown`
//! (its messages wait in the queue, their attempts untouched), then exactly one attempt goes through as a probe
//! (half-open) while the others keep waiting; a success closes it, another outage opens it again at once.
//!
//! Refusals that say the provider is up (4xx, 429 with its own `retry_after`) neither open nor close it.
//! The state is exported as `herald_circuit_breaker_open{channel}` and shown by `herald status`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    pub threshold: u32,
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            threshold: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

pub struct Breaker {
    channel: &'static str,
    settings: BreakerSettings,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    consecutive_outages: u32,
    open_until: Option<Instant>,
    /// Half-open: the one probe is out.
    probing: bool,
}

/// While a probe is out, others ask again after this long.
const PROBE_WAIT: Duration = Duration::from_millis(200);

/// A breaker as `herald status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BreakerView {
    pub channel: &'static str,
    pub open: bool,
    pub consecutive_outages: u32,
    /// Seconds until the next attempt is let through, when open.
    pub retry_in_secs: Option<f64>,
}

impl Breaker {
    pub fn new(channel: &'static str, settings: BreakerSettings) -> Self {
        // The gauge appears once a breaker first opens: exporting 0 here would let any new breaker in the
        // process overwrite another's open state (the metrics registry is per process, keyed by channel).
        Self {
            channel,
            settings,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Ok` when an attempt may go out now (after the cooldown, the first caller gets the probe); otherwise how
    /// long to wait.
    pub fn allow(&self) -> Result<(), Duration> {
        let mut state = self.lock();
        match state.open_until {
            Some(until) if Instant::now() < until => Err(until - Instant::now()),
            Some(_) if state.probing => Err(PROBE_WAIT),
            Some(_) => {
                state.probing = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Would [`Breaker::allow`] refuse now? (Without taking the probe.)
    pub fn blocked(&self) -> bool {
        let state = self.lock();
        match state.open_until {
            Some(until) => Instant::now() < until || state.probing,
            None => false,
        }
    }

    /// An attempt that was let through ended without telling whether the provider is up (it never reached
    /// the provider): give the probe back.
    pub fn release(&self) {
        self.lock().probing = false;
    }

    /// The provider answered (whatever it said, it is up).
    pub fn record_success(&self) {
        let mut state = self.lock();
        let was_open = state.open_until.is_some();
        *state = State::default();
        drop(state);
        if was_open {
            tracing::info!(channel = self.channel, "circuit breaker closed");
            self.export(false);
        }
    }

    /// The provider did not answer, or answered 5xx.
    pub fn record_outage(&self) {
        let mut state = self.lock();
        state.consecutive_outages += 1;
        state.probing = false;
        if state.consecutive_outages >= self.settings.threshold {
            state.open_until = Some(Instant::now() + self.settings.cooldown);
            let outages = state.consecutive_outages;
            drop(state);
            tracing::warn!(channel = self.channel, outages, cooldown = ?self.settings.cooldown, "circuit breaker open: pausing deliveries");
            self.export(true);
        }
    }

    pub fn view(&self) -> BreakerView {
        let state = self.lock();
        let now = Instant::now();
        let open = state.open_until.is_some_and(|until| now < until);
        BreakerView {
            channel: self.channel,
            open,
            consecutive_outages: state.consecutive_outages,
            retry_in_secs: state
                .open_until
                .filter(|_| open)
                .map(|until| (until - now).as_secs_f64()),
        }
    }

    fn export(&self, open: bool) {
        metrics::gauge!("herald_circuit_breaker_open", "channel" => self.channel).set(if open {
            1.0
        } else {
            0.0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(cooldown_ms: u64) -> Breaker {
        Breaker::new(
            "telegram",
            BreakerSettings {
                threshold: 3,
                cooldown: Duration::from_millis(cooldown_ms),
            },
        )
    }

    #[test]
    fn it_opens_after_consecutive_outages_only() {
        let b = breaker(60_000);
        b.record_outage();
        b.record_outage();
        b.record_success();
        b.record_outage();
        b.record_outage();
        assert!(b.allow().is_ok(), "the success in between reset the count");
        b.record_outage();
        let wait = b.allow().unwrap_err();
        assert!(wait > Duration::from_secs(59));
        assert!(b.view().open);
    }

    #[test]
    fn after_the_cooldown_one_attempt_decides() {
        let b = breaker(20);
        for _ in 0..3 {
            b.record_outage();
        }
        assert!(b.allow().is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(!b.blocked());
        assert!(b.allow().is_ok(), "half-open: one attempt may go");
        assert!(b.blocked() && b.allow().is_err(), "and only one");
        b.record_outage();
        assert!(b.allow().is_err(), "a failed probe opens it again at once");
        std::thread::sleep(Duration::from_millis(30));
        b.record_success();
        assert!(b.allow().is_ok());
        assert_eq!(
            b.view(),
            BreakerView {
                channel: "telegram",
                open: false,
                consecutive_outages: 0,
                retry_in_secs: None
            }
        );
    }
}
