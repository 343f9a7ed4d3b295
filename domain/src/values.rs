//! Value types that can only be built through `parse`, so an invalid one cannot exist past the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a value was refused; the message is safe to show to the user who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidValue {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// A project's display name: 1 to 100 characters, no control characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProjectName(String);

impl ProjectName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(InvalidValue::new("name", "must not be empty"));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(InvalidValue::new(
                "name",
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(InvalidValue::new(
                "name",
                "must not contain control characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProjectName {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ProjectName> for String {
    fn from(value: ProjectName) -> Self {
        value.0
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Telegram chat id: a user (positive) or a group/channel (negative); never zero.
///
/// Telegram documents chat ids as fitting in a signed 52-bit integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct ChatId(i64);

impl ChatId {
    const LIMIT: i64 = 1 << 52;

    pub fn parse(raw: i64) -> Result<Self, InvalidValue> {
        if raw == 0 || raw.abs() >= Self::LIMIT {
            return Err(InvalidValue::new(
                "chat_id",
                "must be a non-zero Telegram chat id",
            ));
        }
        Ok(Self(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for ChatId {
    type Error = InvalidValue;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<ChatId> for i64 {
    fn from(value: ChatId) -> Self {
        value.0
    }
}

/// Where a build run stands. Ordered: a run only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    #[default]
    Unknown,
    Queued,
    Started,
    Completed,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Queued => "queued",
            Self::Started => "started",
            Self::Completed => "completed",
        }
    }
}

/// How a finished build (or job) ended, in Herald's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
    Skipped,
    TimedOut,
    ActionRequired,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Skipped => "skipped",
            Self::TimedOut => "timed_out",
            Self::ActionRequired => "action_required",
        }
    }

    /// Does this outcome say anything about the health of the branch? A cancelled or skipped run does not.
    pub fn health(self) -> Option<bool> {
        match self {
            Self::Succeeded => Some(true),
            Self::Failed | Self::TimedOut => Some(false),
            Self::Cancelled | Self::Skipped | Self::ActionRequired => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "skipped" => Self::Skipped,
            "timed_out" => Self::TimedOut,
            "action_required" => Self::ActionRequired,
            other => {
                return Err(InvalidValue::new(
                    "outcome",
                    format!("unknown outcome {other:?}"),
                ))
            }
        })
    }
}

/// What a finished run means relative to the previous finished run of the same workflow on the same branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// Failed, and the previous run passed (or there was none).
    Broken,
    /// Passed, and the previous run failed.
    Fixed,
    /// Failed again.
    StillFailing,
    /// Passed, and the previous run passed too (or there was none).
    Passing,
    /// Neither passed nor failed (cancelled, skipped): the branch's health is unchanged.
    Unchanged,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Broken => "broken",
            Self::Fixed => "fixed",
            Self::StillFailing => "still_failing",
            Self::Passing => "passing",
            Self::Unchanged => "unchanged",
        }
    }

    /// Derive the transition from this run's outcome and the previous run's health.
    pub fn between(previous_healthy: Option<bool>, outcome: Outcome) -> Self {
        match (outcome.health(), previous_healthy) {
            (None, _) => Self::Unchanged,
            (Some(false), Some(false)) => Self::StillFailing,
            (Some(false), _) => Self::Broken,
            (Some(true), Some(false)) => Self::Fixed,
            (Some(true), _) => Self::Passing,
        }
    }
}

/// Which finished builds a subscription wants to hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeFilter {
    /// Every finished build.
    All,
    Succeeded,
    Failed,
    Cancelled,
    Broken,
    Fixed,
    StillFailing,
    /// A run started (not a verdict: the planner sees it on `BuildStarted`).
    Started,
}

impl OutcomeFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Broken => "broken",
            Self::Fixed => "fixed",
            Self::StillFailing => "still_failing",
            Self::Started => "started",
        }
    }

    /// Does this filter want a finished run with this outcome and transition? (`started` never does.)
    pub fn matches(self, outcome: Outcome, transition: Transition) -> bool {
        match self {
            Self::All => true,
            Self::Succeeded => outcome == Outcome::Succeeded,
            Self::Failed => outcome.health() == Some(false),
            Self::Cancelled => outcome == Outcome::Cancelled,
            Self::Broken => transition == Transition::Broken,
            Self::Fixed => transition == Transition::Fixed,
            Self::StillFailing => transition == Transition::StillFailing,
            Self::Started => false,
        }
    }
}

impl FromStr for OutcomeFilter {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "all" => Self::All,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "broken" => Self::Broken,
            "fixed" => Self::Fixed,
            "still_failing" => Self::StillFailing,
            "started" => Self::Started,
            other => {
                return Err(InvalidValue::new(
                    "outcomes",
                    format!("unknown outcome filter {other:?}; expected one of all, succeeded, failed, cancelled, broken, fixed, still_failing, started"),
                ))
            }
        })
    }
}

/// The language a subscriber reads: the bot's answers and (with issue 6's templates) notifications.
///
/// English is the fallback for everything; German is the second full translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    #[default]
    En,
    De,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::En, Language::De];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::De => "de",
        }
    }

    /// From an IETF tag as Telegram sends it (`de`, `de-AT`, `en-GB`); `None` when Herald has no translation.
    pub fn from_tag(tag: &str) -> Option<Self> {
        let primary = tag.split(['-', '_']).next().unwrap_or_default();
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(primary))
    }
}

impl FromStr for Language {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_tag(s).ok_or_else(|| {
            InvalidValue::new(
                "language",
                format!("unsupported language {s:?}; expected one of en, de"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_trimmed_and_bounded() {
        assert_eq!(ProjectName::parse("  api  ").unwrap().as_str(), "api");
        assert!(ProjectName::parse("   ").is_err());
        assert!(ProjectName::parse(&"x".repeat(101)).is_err());
        assert!(ProjectName::parse(&"é".repeat(100)).is_ok());
        assert!(ProjectName::parse("a\u{0007}b").is_err());
    }

    #[test]
    fn chat_ids_must_be_telegram_shaped() {
        assert!(ChatId::parse(0).is_err());
        assert!(ChatId::parse(1 << 52).is_err());
        assert_eq!(ChatId::parse(-1001234567890).unwrap().get(), -1001234567890);
        assert!(serde_json::from_str::<ChatId>("0").is_err());
    }

    #[test]
    fn transitions_follow_the_previous_health() {
        use Outcome::*;
        assert_eq!(Transition::between(None, Failed), Transition::Broken);
        assert_eq!(Transition::between(Some(true), Failed), Transition::Broken);
        assert_eq!(
            Transition::between(Some(false), TimedOut),
            Transition::StillFailing
        );
        assert_eq!(
            Transition::between(Some(false), Succeeded),
            Transition::Fixed
        );
        assert_eq!(Transition::between(None, Succeeded), Transition::Passing);
        assert_eq!(
            Transition::between(Some(false), Cancelled),
            Transition::Unchanged
        );
    }

    #[test]
    fn outcome_filters_match_outcomes_and_transitions() {
        assert!(OutcomeFilter::Failed.matches(Outcome::TimedOut, Transition::Broken));
        assert!(!OutcomeFilter::Fixed.matches(Outcome::Succeeded, Transition::Passing));
        assert!(OutcomeFilter::All.matches(Outcome::Cancelled, Transition::Unchanged));
        assert!("sometimes".parse::<OutcomeFilter>().is_err());
        assert_eq!(
            "still_failing".parse::<OutcomeFilter>(),
            Ok(OutcomeFilter::StillFailing)
        );
        for o in [
            "succeeded",
            "failed",
            "cancelled",
            "skipped",
            "timed_out",
            "action_required",
        ] {
            assert_eq!(o.parse::<Outcome>().unwrap().as_str(), o);
        }
    }
}
