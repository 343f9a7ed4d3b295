//! Herald's configuration: one typed document, read from defaults, then an optional TOML file
//! (`--config`/`HERALD_CONFIG`), then the environment (`HERALD_<KEY>`, and `DATABASE_URL`), later sources
//! winning. Everything is validated before anything starts, and each problem is named by the variable a user
//! sets. Secrets may come from a file instead (`HERALD_TELEGRAM_BOT_TOKEN_FILE=/run/secrets/telegram`), as
//! container orchestrators mount them; no secret is ever logged or printed (see [`Config::redacted`]).
//!
//! The keys are flat (`kafka_brokers`, not `[kafka] brokers`) so that a file key and its environment variable
//! are the same word: `kafka_brokers` in the file, `HERALD_KAFKA_BROKERS` in the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use api::auth::jwt::JwtKeys;
use api::limits::{LimitSettings, Rate};
use api::HttpSettings;
use chrono::{DateTime, Utc};
use domain::ChannelKind;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use workers::bot::BotMode;
use workers::rate_limit::TelegramLimits;
use workers::{DeliverySettings, KafkaConfig, TelegramConfig};

use crate::ops::backup::{parse_interval, Schedule};
use crate::{PoolSettings, Settings};

/// Every setting, as a user writes it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Postgres, the source of truth (also read from `DATABASE_URL`).
    pub database_url: String,
    pub database_url_file: Option<PathBuf>,
    /// Most connections this process opens to Postgres.
    pub database_max_connections: u32,
    /// Seconds to wait for a free connection before a request fails.
    pub database_acquire_timeout_secs: u64,
    /// Where the API (or a worker's health and metrics endpoint) listens.
    pub listen: SocketAddr,
    /// The URL users and CI systems reach Herald at (default: `http://<listen>`).
    pub public_url: Option<String>,
    /// Kafka bootstrap servers; empty: the in-process bus (all-in-one only).
    pub kafka_brokers: Option<String>,
    pub kafka_topic: String,
    pub kafka_partitions: i32,
    pub kafka_group_prefix: String,
    /// `fetch.wait.max.ms` of the consumers (see `workers::DEFAULT_FETCH_WAIT_MS`).
    pub kafka_fetch_wait_ms: u32,
    pub telegram_api_url: String,
    /// Without a token, notifications are planned and queued, not sent.
    pub telegram_bot_token: Option<String>,
    pub telegram_bot_token_file: Option<PathBuf>,
    pub telegram_timeout_secs: u64,
    /// `polling` (getUpdates; no public URL needed), `webhook` (Telegram posts to
    /// `<public_url>/api/v1/telegram/webhook`; needs `telegram_webhook_secret`) or `off`.
    pub telegram_bot_mode: String,
    /// The secret Telegram echoes in `X-Telegram-Bot-Api-Secret-Token` (1-256 of `A-Z a-z 0-9 _ -`).
    pub telegram_webhook_secret: Option<String>,
    pub telegram_webhook_secret_file: Option<PathBuf>,
    /// The SMTP server for email (`smtp://host:587?tls=starttls`, `smtps://user:pass@host`); unset: no email.
    pub smtp_url: Option<String>,
    pub smtp_url_file: Option<PathBuf>,
    /// The From mailbox, e.g. `Herald <herald@example.com>`.
    pub smtp_from: String,
    pub smtp_timeout_secs: u64,
    /// The Firebase service-account JSON file (from the Firebase console); unset: no FCM push.
    pub fcm_service_account_file: Option<PathBuf>,
    pub fcm_api_url: String,
    /// The VAPID private key (PKCS#8 PEM, as `herald vapid-keys` writes it); unset: no Web Push.
    pub vapid_private_key: Option<String>,
    pub vapid_private_key_file: Option<PathBuf>,
    /// Whom a push service's operator contacts about Herald: `mailto:ops@example.com` or an https URL.
    pub vapid_subject: Option<String>,
    pub push_timeout_secs: u64,
    pub delivery_max_attempts: u32,
    /// Per-channel attempt budgets; unset: `delivery_max_attempts`.
    pub delivery_max_attempts_telegram: Option<u32>,
    pub delivery_max_attempts_email: Option<u32>,
    pub delivery_max_attempts_fcm: Option<u32>,
    pub delivery_max_attempts_web_push: Option<u32>,
    /// Notifications one delivery process has in flight at once.
    pub delivery_concurrency: usize,
    /// Telegram's limits (per process; 0 turns one off): messages per second to one chat, per minute to one
    /// group, per second in all.
    pub telegram_rate_per_chat_per_sec: u32,
    pub telegram_rate_per_group_per_min: u32,
    pub telegram_rate_overall_per_sec: u32,
    /// Consecutive provider outages (timeouts, 5xx) that open the delivery circuit breaker.
    pub delivery_breaker_threshold: u32,
    /// Seconds the breaker stays open before one attempt is let through.
    pub delivery_breaker_cooldown_secs: u64,
    pub backup_dir: Option<PathBuf>,
    /// 90s, 15m, 6h, 1d.
    pub backup_interval: String,
    pub backup_keep: usize,
    /// `text` or `json`.
    pub log_format: String,
    /// HS256 secret for bearer JWTs (at least 32 bytes); unset: API keys only.
    pub jwt_secret: Option<String>,
    pub jwt_secret_file: Option<PathBuf>,
    /// The secret being rotated out, accepted until `jwt_previous_secret_until`.
    pub jwt_previous_secret: Option<String>,
    pub jwt_previous_secret_file: Option<PathBuf>,
    pub jwt_previous_secret_until: Option<DateTime<Utc>>,
    /// How long the previous webhook secret keeps working after a rotation, in seconds.
    pub webhook_secret_overlap_secs: u64,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    pub webhook_rate_limit_per_second: u32,
    pub webhook_rate_limit_burst: u32,
    /// Take the client address from `X-Forwarded-For` (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
    pub request_timeout_secs: u64,
    /// Browser origins allowed to call the API (comma-separated in the environment); empty: CORS off.
    #[serde(deserialize_with = "list_or_commas")]
    pub cors_origins: Vec<String>,
    /// Live-update streams send a heartbeat this often, in seconds.
    pub stream_heartbeat_secs: u64,
    /// Analytics answers are cached at most this long, in seconds (changes drop them sooner); 0 turns the
    /// cache off.
    pub read_cache_ttl_secs: u64,
    /// How long a dashboard login lasts, in hours.
    pub session_ttl_hours: u64,
    /// How long the live feed keeps a change for clients that resume, in hours.
    pub live_feed_retention_hours: u64,
    /// Serve the dashboard from this directory instead of the copy built into the binary (front-end work).
    pub ui_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        let limits = LimitSettings::default();
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/herald".into(),
            database_url_file: None,
            database_max_connections: 20,
            database_acquire_timeout_secs: 10,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            kafka_brokers: None,
            kafka_topic: "herald.events".into(),
            kafka_partitions: 6,
            kafka_group_prefix: "herald".into(),
            kafka_fetch_wait_ms: workers::DEFAULT_FETCH_WAIT_MS,
            telegram_api_url: "https://api.telegram.org".into(),
            telegram_bot_token: None,
            telegram_bot_token_file: None,
            telegram_timeout_secs: 10,
            telegram_bot_mode: "polling".into(),
            telegram_webhook_secret: None,
            telegram_webhook_secret_file: None,
            smtp_url: None,
            smtp_url_file: None,
            smtp_from: "Herald <herald@localhost>".into(),
            smtp_timeout_secs: 10,
            fcm_service_account_file: None,
            fcm_api_url: "https://fcm.googleapis.com".into(),
            vapid_private_key: None,
            vapid_private_key_file: None,
            vapid_subject: None,
            push_timeout_secs: 10,
            delivery_max_attempts: 5,
            delivery_max_attempts_telegram: None,
            delivery_max_attempts_email: None,
            delivery_max_attempts_fcm: None,
            delivery_max_attempts_web_push: None,
            delivery_concurrency: 32,
            telegram_rate_per_chat_per_sec: 1,
            telegram_rate_per_group_per_min: 20,
            telegram_rate_overall_per_sec: 30,
            delivery_breaker_threshold: 5,
            delivery_breaker_cooldown_secs: 30,
            backup_dir: None,
            backup_interval: "1d".into(),
            backup_keep: 7,
            log_format: "text".into(),
            jwt_secret: None,
            jwt_secret_file: None,
            jwt_previous_secret: None,
            jwt_previous_secret_file: None,
            jwt_previous_secret_until: None,
            webhook_secret_overlap_secs: commands::DEFAULT_SECRET_OVERLAP.as_secs(),
            rate_limit_per_second: limits.api.per_second.get(),
            rate_limit_burst: limits.api.burst.get(),
            webhook_rate_limit_per_second: limits.webhooks.per_second.get(),
            webhook_rate_limit_burst: limits.webhooks.burst.get(),
            trust_forwarded_for: false,
            request_timeout_secs: 30,
            cors_origins: Vec::new(),
            stream_heartbeat_secs: 15,
            read_cache_ttl_secs: 10,
            session_ttl_hours: 12,
            live_feed_retention_hours: 24,
            ui_dir: None,
        }
    }
}

/// What is wrong with the configuration, worded for the person who set it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Source(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

impl Config {
    /// Defaults, then `file` (when given), then the environment.
    ///
    /// Only `HERALD_` variables that name a setting are read: the environment holds other `HERALD_` variables
    /// (`HERALD_LOG`, `HERALD_CONFIG`, a test harness's own). The file, written for Herald alone, is strict.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let known: Vec<String> = match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(invalid(format!(
                    "the config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        Self::from_figment(
            figment
                .merge(
                    Env::raw()
                        .only(&["DATABASE_URL"])
                        .map(|_| "database_url".into()),
                )
                .merge(
                    Env::prefixed("HERALD_")
                        .map(|k| k.as_str().to_ascii_lowercase().into())
                        .filter(move |k| known.iter().any(|name| name == k.as_str())),
                ),
        )
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Source(Box::new(e)))?;
        config.read_secret_files()?;
        Ok(config)
    }

    /// `*_file` settings name files holding the secret (trailing newline dropped); setting both is an error.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        fn read(
            name: &str,
            value: &mut Option<String>,
            file: &Option<PathBuf>,
        ) -> Result<(), ConfigError> {
            let Some(file) = file else { return Ok(()) };
            if value.is_some() {
                return Err(invalid(format!(
                    "set HERALD_{0} or HERALD_{0}_FILE, not both",
                    name.to_ascii_uppercase()
                )));
            }
            let content = std::fs::read_to_string(file).map_err(|e| {
                invalid(format!(
                    "cannot read HERALD_{}_FILE ({}): {e}",
                    name.to_ascii_uppercase(),
                    file.display()
                ))
            })?;
            *value = Some(content.trim_end_matches(['\n', '\r']).to_owned());
            Ok(())
        }
        read(
            "telegram_bot_token",
            &mut self.telegram_bot_token,
            &self.telegram_bot_token_file,
        )?;
        read("jwt_secret", &mut self.jwt_secret, &self.jwt_secret_file)?;
        read("smtp_url", &mut self.smtp_url, &self.smtp_url_file)?;
        read(
            "vapid_private_key",
            &mut self.vapid_private_key,
            &self.vapid_private_key_file,
        )?;
        read(
            "telegram_webhook_secret",
            &mut self.telegram_webhook_secret,
            &self.telegram_webhook_secret_file,
        )?;
        read(
            "jwt_previous_secret",
            &mut self.jwt_previous_secret,
            &self.jwt_previous_secret_file,
        )?;
        if let Some(file) = &self.database_url_file {
            let content = std::fs::read_to_string(file).map_err(|e| {
                invalid(format!(
                    "cannot read HERALD_DATABASE_URL_FILE ({}): {e}",
                    file.display()
                ))
            })?;
            self.database_url = content.trim().to_owned();
        }
        Ok(())
    }

    /// The SMTP mailer's settings, checked the way the mailer will read them.
    fn email(&self) -> Result<Option<workers::email::EmailConfig>, ConfigError> {
        let Some(url) = self.smtp_url.clone().filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        let config = workers::email::EmailConfig {
            url,
            from: self.smtp_from.clone(),
            timeout: Duration::from_secs(self.smtp_timeout_secs.max(1)),
        };
        workers::email::check(&config)
            .map_err(|e| invalid(format!("HERALD_SMTP_URL / HERALD_SMTP_FROM: {e}")))?;
        Ok(Some(config))
    }

    /// FCM's settings: the service account read and checked now, so a bad file fails at start.
    fn fcm(&self) -> Result<Option<workers::push::FcmConfig>, ConfigError> {
        let Some(file) = &self.fcm_service_account_file else {
            return Ok(None);
        };
        check_url("HERALD_FCM_API_URL", &self.fcm_api_url)?;
        let json = std::fs::read_to_string(file).map_err(|e| {
            invalid(format!(
                "cannot read HERALD_FCM_SERVICE_ACCOUNT_FILE ({}): {e}",
                file.display()
            ))
        })?;
        let service_account = workers::push::ServiceAccount::from_json(&json)
            .map_err(|e| invalid(format!("HERALD_FCM_SERVICE_ACCOUNT_FILE: {e}")))?;
        let config = workers::push::FcmConfig {
            service_account,
            api_url: self.fcm_api_url.clone(),
            timeout: Duration::from_secs(self.push_timeout_secs.max(1)),
        };
        workers::push::FcmClient::new(config.clone())
            .map_err(|e| invalid(format!("HERALD_FCM_SERVICE_ACCOUNT_FILE: {e}")))?;
        Ok(Some(config))
    }

    /// Web Push's settings, checked by building the client.
    fn web_push(&self) -> Result<Option<workers::push::WebPushConfig>, ConfigError> {
        let Some(pem) = self
            .vapid_private_key
            .clone()
            .filter(|k| !k.trim().is_empty())
        else {
            return Ok(None);
        };
        let Some(subject) = self.vapid_subject.clone().filter(|s| !s.trim().is_empty()) else {
            return Err(invalid(
                "HERALD_VAPID_PRIVATE_KEY needs HERALD_VAPID_SUBJECT (mailto:you@example.com or an https URL)",
            ));
        };
        let config = workers::push::WebPushConfig {
            vapid_private_key_pem: pem,
            subject,
            timeout: Duration::from_secs(self.push_timeout_secs.max(1)),
        };
        workers::push::WebPushClient::new(config.clone()).map_err(|e| {
            invalid(format!(
                "HERALD_VAPID_PRIVATE_KEY / HERALD_VAPID_SUBJECT: {e}"
            ))
        })?;
        Ok(Some(config))
    }

    /// How the bot gets its updates, checked.
    fn bot_mode(&self, public_url: &str) -> Result<Option<BotMode>, ConfigError> {
        match self.telegram_bot_mode.as_str() {
            "off" => Ok(None),
            "polling" => Ok(Some(BotMode::Polling)),
            "webhook" => {
                let secret = self.telegram_webhook_secret.clone().unwrap_or_default();
                let valid = (1..=256).contains(&secret.len())
                    && secret
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    return Err(invalid("HERALD_TELEGRAM_BOT_MODE=webhook needs HERALD_TELEGRAM_WEBHOOK_SECRET: 1 to 256 of A-Z, a-z, 0-9, _ and -"));
                }
                Ok(Some(BotMode::Webhook {
                    url: format!(
                        "{}/api/v1/telegram/webhook",
                        public_url.trim_end_matches('/')
                    ),
                    secret,
                }))
            }
            other => Err(invalid(format!(
                "HERALD_TELEGRAM_BOT_MODE must be polling, webhook or off (got {other:?})"
            ))),
        }
    }

    /// Check every setting and turn them into what [`crate::start`] takes.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        if !self.database_url.starts_with("postgres://")
            && !self.database_url.starts_with("postgresql://")
        {
            return Err(invalid("DATABASE_URL must be a postgres:// URL"));
        }
        if self.database_max_connections == 0 {
            return Err(invalid(
                "HERALD_DATABASE_MAX_CONNECTIONS must be at least 1",
            ));
        }
        let public_url = self
            .public_url
            .clone()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| format!("http://{}", self.listen));
        check_url("HERALD_PUBLIC_URL", &public_url)?;
        check_url("HERALD_TELEGRAM_API_URL", &self.telegram_api_url)?;
        if self.kafka_partitions < 1 {
            return Err(invalid(format!(
                "HERALD_KAFKA_PARTITIONS must be at least 1 (got {})",
                self.kafka_partitions
            )));
        }
        if !(1..=1000).contains(&self.kafka_fetch_wait_ms) {
            return Err(invalid(format!(
                "HERALD_KAFKA_FETCH_WAIT_MS must be between 1 and 1000 (got {})",
                self.kafka_fetch_wait_ms
            )));
        }
        let mut max_attempts = std::collections::HashMap::new();
        for (kind, attempts) in [
            (ChannelKind::Telegram, self.delivery_max_attempts_telegram),
            (ChannelKind::Email, self.delivery_max_attempts_email),
            (ChannelKind::Fcm, self.delivery_max_attempts_fcm),
            (ChannelKind::WebPush, self.delivery_max_attempts_web_push),
        ] {
            match attempts {
                Some(0) => {
                    return Err(invalid(format!(
                        "HERALD_DELIVERY_MAX_ATTEMPTS_{} must be at least 1",
                        kind.as_str().to_uppercase()
                    )))
                }
                Some(n) => {
                    max_attempts.insert(kind, n);
                }
                None => {}
            }
        }
        if self.delivery_max_attempts == 0 {
            return Err(invalid("HERALD_DELIVERY_MAX_ATTEMPTS must be at least 1"));
        }
        if self.delivery_concurrency == 0 || self.delivery_concurrency > 256 {
            return Err(invalid("HERALD_DELIVERY_CONCURRENCY must be 1 to 256"));
        }
        if self.delivery_breaker_threshold == 0 {
            return Err(invalid(
                "HERALD_DELIVERY_BREAKER_THRESHOLD must be at least 1",
            ));
        }
        let rate = |name: &str, per_second: u32, burst: u32| {
            Rate::new(per_second, burst).ok_or_else(|| {
                invalid(format!(
                    "{name}_PER_SECOND and {name}_BURST must both be at least 1"
                ))
            })
        };
        let limits = LimitSettings {
            api: rate(
                "HERALD_RATE_LIMIT",
                self.rate_limit_per_second,
                self.rate_limit_burst,
            )?,
            webhooks: rate(
                "HERALD_WEBHOOK_RATE_LIMIT",
                self.webhook_rate_limit_per_second,
                self.webhook_rate_limit_burst,
            )?,
            trust_forwarded_for: self.trust_forwarded_for,
        };
        let backups = match &self.backup_dir {
            None => None,
            Some(dir) => Some(Schedule {
                dir: dir.clone(),
                every: parse_interval(&self.backup_interval)
                    .map_err(|e| invalid(format!("HERALD_BACKUP_INTERVAL: {e}")))?,
                keep: self.backup_keep,
            }),
        };
        let bot = self.bot_mode(&public_url)?;
        if self.request_timeout_secs == 0 {
            return Err(invalid("HERALD_REQUEST_TIMEOUT_SECS must be at least 1"));
        }
        if self.stream_heartbeat_secs == 0 {
            return Err(invalid("HERALD_STREAM_HEARTBEAT_SECS must be at least 1"));
        }
        for origin in &self.cors_origins {
            check_url("HERALD_CORS_ORIGINS", origin)?;
        }
        if !(1..=24 * 90).contains(&self.session_ttl_hours) {
            return Err(invalid(
                "HERALD_SESSION_TTL_HOURS must be between 1 and 2160 (90 days)",
            ));
        }
        if !(1..=24 * 365).contains(&self.live_feed_retention_hours) {
            return Err(invalid(format!(
                "HERALD_LIVE_FEED_RETENTION_HOURS must be between 1 and 8760 (a year) (got {})",
                self.live_feed_retention_hours
            )));
        }
        if let Some(dir) = &self.ui_dir {
            if !dir.join("index.html").is_file() {
                return Err(invalid(format!(
                    "HERALD_UI_DIR {} has no index.html",
                    dir.display()
                )));
            }
        }
        Ok(Settings {
            database_url: self.database_url.clone(),
            pool: PoolSettings {
                max_connections: self.database_max_connections,
                acquire_timeout: Duration::from_secs(self.database_acquire_timeout_secs),
            },
            listen: self.listen,
            public_url,
            kafka: self
                .kafka_brokers
                .clone()
                .filter(|b| !b.trim().is_empty())
                .map(|brokers| KafkaConfig {
                    brokers,
                    topic: self.kafka_topic.clone(),
                    partitions: self.kafka_partitions,
                    group_prefix: self.kafka_group_prefix.clone(),
                    fetch_wait_ms: self.kafka_fetch_wait_ms,
                }),
            telegram: self
                .telegram_bot_token
                .clone()
                .filter(|t| !t.trim().is_empty())
                .map(|bot_token| TelegramConfig {
                    api_url: self.telegram_api_url.clone(),
                    bot_token,
                    timeout: Duration::from_secs(self.telegram_timeout_secs.max(1)),
                }),
            delivery: DeliverySettings {
                max_attempts,
                default_max_attempts: self.delivery_max_attempts,
                concurrency: self.delivery_concurrency,
                telegram_limits: TelegramLimits {
                    per_chat_per_sec: self.telegram_rate_per_chat_per_sec,
                    per_group_per_min: self.telegram_rate_per_group_per_min,
                    overall_per_sec: self.telegram_rate_overall_per_sec,
                },
                breaker: workers::breaker::BreakerSettings {
                    threshold: self.delivery_breaker_threshold,
                    cooldown: Duration::from_secs(self.delivery_breaker_cooldown_secs),
                },
            },
            bot,
            email: self.email()?,
            fcm: self.fcm()?,
            web_push: self.web_push()?,
            backups,
            jwt: self.jwt_keys()?,
            webhook_secret_overlap: Duration::from_secs(self.webhook_secret_overlap_secs),
            // Checked above to be at most a year, so it fits.
            live_feed_retention: chrono::Duration::hours(self.live_feed_retention_hours as i64),
            limits,
            http: HttpSettings {
                request_timeout: Duration::from_secs(self.request_timeout_secs),
                cors_origins: self.cors_origins.clone(),
                heartbeat: Duration::from_secs(self.stream_heartbeat_secs),
                cache_ttl: Duration::from_secs(self.read_cache_ttl_secs),
                session_ttl: Duration::from_secs(self.session_ttl_hours * 3600),
                ui_dir: self.ui_dir.clone(),
            },
        })
    }

    fn jwt_keys(&self) -> Result<JwtKeys, ConfigError> {
        let strong = |name: &str, secret: &str| {
            if secret.len() < 32 {
                Err(invalid(format!("{name} must be at least 32 bytes long")))
            } else {
                Ok(())
            }
        };
        let Some(current) = &self.jwt_secret else {
            if self.jwt_previous_secret.is_some() {
                return Err(invalid(
                    "HERALD_JWT_PREVIOUS_SECRET is set without HERALD_JWT_SECRET",
                ));
            }
            return Ok(JwtKeys::disabled());
        };
        strong("HERALD_JWT_SECRET", current)?;
        let keys = JwtKeys::new(current);
        match (&self.jwt_previous_secret, self.jwt_previous_secret_until) {
            (None, None) => Ok(keys),
            (Some(previous), Some(until)) => {
                strong("HERALD_JWT_PREVIOUS_SECRET", previous)?;
                Ok(keys.with_previous(previous, until))
            }
            (Some(_), None) => Err(invalid(
                "HERALD_JWT_PREVIOUS_SECRET needs HERALD_JWT_PREVIOUS_SECRET_UNTIL (RFC 3339): when the old secret stops working",
            )),
            (None, Some(_)) => Err(invalid(
                "HERALD_JWT_PREVIOUS_SECRET_UNTIL is set without HERALD_JWT_PREVIOUS_SECRET",
            )),
        }
    }

    /// The configuration as JSON with every secret replaced by `"<redacted>"`, for `herald config check`.
    pub fn redacted(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        for key in [
            "telegram_bot_token",
            "telegram_webhook_secret",
            "smtp_url",
            "jwt_secret",
            "jwt_previous_secret",
        ] {
            if value[key].is_string() {
                value[key] = "<redacted>".into();
            }
        }
        if let Some(url) = value["database_url"].as_str() {
            value["database_url"] = redact_password(url).into();
        }
        value
    }
}

/// A list, or (as environment variables give it) one comma-separated string.
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(list) => list,
        Either::Commas(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

fn check_url(name: &str, url: &str) -> Result<(), ConfigError> {
    let ok =
        (url.starts_with("http://") || url.starts_with("https://")) && url.len() > "https://".len();
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{name} must be an http:// or https:// URL (got {url:?})"
        )))
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:<redacted>@host/db`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Settings, ConfigError> {
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml));
        Config::from_figment(figment)?.settings()
    }

    fn message(result: Result<Settings, ConfigError>) -> String {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_defaults_are_valid_and_all_in_one() {
        let settings = load("").unwrap();
        assert!(settings.kafka.is_none());
        assert_eq!(settings.public_url, "http://127.0.0.1:8080");
        assert_eq!(settings.pool.max_connections, 20);
    }

    #[test]
    fn each_bad_setting_is_named() {
        assert!(message(load("kafka_partitions = 0")).contains("HERALD_KAFKA_PARTITIONS"));
        assert!(message(load("kafka_fetch_wait_ms = 0")).contains("HERALD_KAFKA_FETCH_WAIT_MS"));
        assert!(message(load("live_feed_retention_hours = 0"))
            .contains("HERALD_LIVE_FEED_RETENTION_HOURS"));
        assert!(message(load("live_feed_retention_hours = 9000"))
            .contains("HERALD_LIVE_FEED_RETENTION_HOURS"));
        assert!(message(load("public_url = \"herald.example\"")).contains("HERALD_PUBLIC_URL"));
        assert!(message(load("rate_limit_burst = 0")).contains("HERALD_RATE_LIMIT"));
        assert!(message(load("jwt_secret = \"short\"")).contains("at least 32 bytes"));
        assert!(
            message(load("backup_dir = \"/b\"\nbackup_interval = \"often\""))
                .contains("HERALD_BACKUP_INTERVAL")
        );
        assert!(message(load("listen = \"nowhere\"")).contains("listen"));
        assert!(message(load("no_such_setting = 1")).contains("no_such_setting"));
        assert!(message(load(
            "jwt_secret = \"0123456789abcdef0123456789abcdef\"\njwt_previous_secret = \"fedcba9876543210fedcba9876543210\""
        ))
        .contains("HERALD_JWT_PREVIOUS_SECRET_UNTIL"));
    }

    #[test]
    fn secrets_come_from_files_and_never_from_both() {
        let dir = std::env::temp_dir().join(format!("herald-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "123:from-file\n").unwrap();
        let toml = format!("telegram_bot_token_file = {:?}", file.display().to_string());
        let settings = load(&toml).unwrap();
        assert_eq!(settings.telegram.unwrap().bot_token, "123:from-file");
        let both = format!("{toml}\ntelegram_bot_token = \"x\"");
        assert!(message(load(&both)).contains("not both"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn redaction_hides_every_secret() {
        let config = Config {
            database_url: "postgres://herald:hunter2@db/herald".into(),
            telegram_bot_token: Some("123:secret".into()),
            jwt_secret: Some("s".repeat(40)),
            ..Config::default()
        };
        let shown = config.redacted().to_string();
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("123:secret"));
        assert!(!shown.contains(&"s".repeat(40)));
        assert!(shown.contains("postgres://herald:<redacted>@db/herald"));
    }

    #[test]
    fn the_bot_mode_and_smtp_are_checked_before_anything_starts() {
        assert_eq!(load("").unwrap().bot, Some(BotMode::Polling));
        assert_eq!(load("telegram_bot_mode = \"off\"").unwrap().bot, None);
        assert!(message(load("telegram_bot_mode = \"carrier-pigeon\""))
            .contains("HERALD_TELEGRAM_BOT_MODE"));
        assert!(message(load("telegram_bot_mode = \"webhook\""))
            .contains("HERALD_TELEGRAM_WEBHOOK_SECRET"));
        assert!(message(load(
            "telegram_bot_mode = \"webhook\"\ntelegram_webhook_secret = \"has spaces\""
        ))
        .contains("HERALD_TELEGRAM_WEBHOOK_SECRET"));
        let webhook = load(
            "telegram_bot_mode = \"webhook\"\ntelegram_webhook_secret = \"s3cret\"\npublic_url = \"https://h.example/\"",
        )
        .unwrap();
        assert_eq!(
            webhook.bot,
            Some(BotMode::Webhook {
                url: "https://h.example/api/v1/telegram/webhook".into(),
                secret: "s3cret".into()
            })
        );
        assert!(load("").unwrap().email.is_none());
        let email = load("smtp_url = \"smtp://mail.example:587?tls=starttls\"").unwrap();
        assert_eq!(
            email.email.unwrap().url,
            "smtp://mail.example:587?tls=starttls"
        );
        assert!(message(load("smtp_url = \"http://mail.example\"")).contains("HERALD_SMTP_URL"));
        assert!(message(load(
            "smtp_url = \"smtp://localhost:25\"\nsmtp_from = \"not an address\""
        ))
        .contains("HERALD_SMTP_FROM"));
    }
}
