//! The `Template` aggregate: the text of one notification message (one kind, one channel, one language), kept
//! as a history of versions.
//!
//! The aggregate knows which parts a channel's message has and which version is current; it does not know
//! handlebars, the variables or the built-in texts. Whether a template compiles and names only known variables
//! is checked by the command service before it commands anything, so an invalid template never becomes an
//! event. A reset records no text: it means "the built-in text of whatever Herald is running", so a built-in
//! improved in a later release reaches everyone who never customised it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::values::{InvalidValue, Language};

/// What a message announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateKind {
    /// A run's verdict (passed, failed, broken, fixed, cancelled ...).
    BuildFinished,
    /// A run started.
    BuildStarted,
}

impl TemplateKind {
    pub const ALL: [TemplateKind; 2] = [TemplateKind::BuildFinished, TemplateKind::BuildStarted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BuildFinished => "build_finished",
            Self::BuildStarted => "build_started",
        }
    }
}

/// Where a message goes; each channel's message has its own parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateChannel {
    Telegram,
    Email,
    /// FCM and Web Push alike: a title and a body.
    Push,
}

impl TemplateChannel {
    pub const ALL: [TemplateChannel; 3] = [
        TemplateChannel::Telegram,
        TemplateChannel::Email,
        TemplateChannel::Push,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Telegram => "telegram",
            Self::Email => "email",
            Self::Push => "push",
        }
    }

    /// The parts a template for this channel consists of, each its own handlebars template.
    pub fn parts(self) -> &'static [&'static str] {
        match self {
            Self::Telegram => &["text"],
            Self::Email => &["subject", "text", "html"],
            Self::Push => &["title", "body"],
        }
    }
}

/// `{kind}.{channel}.{language}`, e.g. `build_finished.telegram.en`: the `Template` aggregate id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TemplateId {
    pub kind: TemplateKind,
    pub channel: TemplateChannel,
    pub language: Language,
}

impl TemplateId {
    pub fn new(kind: TemplateKind, channel: TemplateChannel, language: Language) -> Self {
        Self {
            kind,
            channel,
            language,
        }
    }

    /// Every template Herald has, in a stable order (kind, channel, language).
    pub fn all() -> Vec<TemplateId> {
        let mut ids = Vec::new();
        for kind in TemplateKind::ALL {
            for channel in TemplateChannel::ALL {
                for language in Language::ALL {
                    ids.push(Self::new(kind, channel, language));
                }
            }
        }
        ids
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let unknown = || {
            InvalidValue::new(
                "template_id",
                format!("unknown template {raw:?}; expected {{build_finished|build_started}}.{{telegram|email|push}}.{{en|de}}"),
            )
        };
        let mut pieces = raw.split('.');
        let (Some(kind), Some(channel), Some(language), None) =
            (pieces.next(), pieces.next(), pieces.next(), pieces.next())
        else {
            return Err(unknown());
        };
        let kind = TemplateKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(unknown)?;
        let channel = TemplateChannel::ALL
            .into_iter()
            .find(|c| c.as_str() == channel)
            .ok_or_else(unknown)?;
        // Exactly `en` or `de`: an id is a name, not a language tag to be negotiated.
        let language = Language::ALL
            .into_iter()
            .find(|l| l.as_str() == language)
            .ok_or_else(unknown)?;
        Ok(Self::new(kind, channel, language))
    }
}

impl fmt::Display for TemplateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}",
            self.kind.as_str(),
            self.channel.as_str(),
            self.language.as_str()
        )
    }
}

impl FromStr for TemplateId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TemplateId {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TemplateId> for String {
    fn from(value: TemplateId) -> Self {
        value.to_string()
    }
}

/// The longest part Herald stores: far above any sensible message, small enough to keep events small.
pub const MAX_PART_CHARS: usize = 16_000;

/// Why a set of parts does not fit a channel; names the part so an editor can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartsError {
    #[error("part {part:?} is missing; a {channel} template has {expected}")]
    Missing {
        part: String,
        channel: &'static str,
        expected: String,
    },
    #[error("part {part:?} is not part of a {channel} template, which has {expected}")]
    Unexpected {
        part: String,
        channel: &'static str,
        expected: String,
    },
    #[error("part {part:?} is longer than {max} characters")]
    TooLong { part: String, max: usize },
}

impl PartsError {
    pub fn part(&self) -> &str {
        match self {
            Self::Missing { part, .. }
            | Self::Unexpected { part, .. }
            | Self::TooLong { part, .. } => part,
        }
    }
}

/// Are these exactly the channel's parts, each of a storable size?
pub fn check_parts(
    channel: TemplateChannel,
    parts: &BTreeMap<String, String>,
) -> Result<(), PartsError> {
    let expected = channel.parts().join(", ");
    if let Some(extra) = parts
        .keys()
        .find(|p| !channel.parts().contains(&p.as_str()))
    {
        return Err(PartsError::Unexpected {
            part: extra.clone(),
            channel: channel.as_str(),
            expected,
        });
    }
    if let Some(missing) = channel.parts().iter().find(|p| !parts.contains_key(**p)) {
        return Err(PartsError::Missing {
            part: (*missing).to_owned(),
            channel: channel.as_str(),
            expected,
        });
    }
    if let Some((part, _)) = parts
        .iter()
        .find(|(_, text)| text.chars().count() > MAX_PART_CHARS)
    {
        return Err(PartsError::TooLong {
            part: part.clone(),
            max: MAX_PART_CHARS,
        });
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub enum TemplateCommand {
    /// Make `parts` the current text. `expected_version`: the version the editor started from; a different
    /// current version means someone else saved in between.
    SaveVersion {
        template_id: TemplateId,
        parts: BTreeMap<String, String>,
        expected_version: Option<u32>,
        by: String,
        at: DateTime<Utc>,
    },
    /// Go back to the built-in text, as a new version.
    Reset {
        template_id: TemplateId,
        by: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TemplateEvent {
    TemplateVersionSaved {
        template_id: TemplateId,
        version: u32,
        parts: BTreeMap<String, String>,
        saved_by: String,
        saved_at: DateTime<Utc>,
    },
    TemplateReset {
        template_id: TemplateId,
        version: u32,
        reset_by: String,
        reset_at: DateTime<Utc>,
    },
}

impl DomainEvent for TemplateEvent {
    fn event_type(&self) -> String {
        match self {
            Self::TemplateVersionSaved { .. } => "TemplateVersionSaved",
            Self::TemplateReset { .. } => "TemplateReset",
        }
        .to_owned()
    }
    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateVersionError {
    #[error("template {template_id} is at version {current}, not {expected}: someone saved it meanwhile")]
    Conflict {
        template_id: TemplateId,
        expected: u32,
        current: u32,
    },
    #[error("command for {given} sent to template {current}")]
    WrongTemplate {
        current: TemplateId,
        given: TemplateId,
    },
    #[error(transparent)]
    Parts(#[from] PartsError),
}

/// One template's history, as far as deciding the next version needs it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub template_id: Option<TemplateId>,
    /// The current version; 0 while the built-in text was never replaced.
    pub version: u32,
    /// The current custom parts; `None`: the built-in text.
    pub parts: Option<BTreeMap<String, String>>,
}

impl Template {
    fn check_id(&self, given: TemplateId) -> Result<(), TemplateVersionError> {
        match self.template_id {
            Some(current) if current != given => {
                Err(TemplateVersionError::WrongTemplate { current, given })
            }
            _ => Ok(()),
        }
    }
}

impl Aggregate for Template {
    const TYPE: &'static str = "Template";
    type Command = TemplateCommand;
    type Event = TemplateEvent;
    type Error = TemplateVersionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            TemplateCommand::SaveVersion {
                template_id,
                parts,
                expected_version,
                by,
                at,
            } => {
                self.check_id(template_id)?;
                if let Some(expected) = expected_version.filter(|e| *e != self.version) {
                    return Err(TemplateVersionError::Conflict {
                        template_id,
                        expected,
                        current: self.version,
                    });
                }
                check_parts(template_id.channel, &parts)?;
                // Saving what is already current (a retried request, an editor saving twice) records nothing.
                if self.parts.as_ref() == Some(&parts) {
                    return Ok(());
                }
                TemplateEvent::TemplateVersionSaved {
                    template_id,
                    version: self.version + 1,
                    parts,
                    saved_by: by,
                    saved_at: at,
                }
            }
            TemplateCommand::Reset {
                template_id,
                by,
                at,
            } => {
                self.check_id(template_id)?;
                if self.parts.is_none() {
                    return Ok(());
                }
                TemplateEvent::TemplateReset {
                    template_id,
                    version: self.version + 1,
                    reset_by: by,
                    reset_at: at,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TemplateEvent::TemplateVersionSaved {
                template_id,
                version,
                parts,
                ..
            } => {
                self.template_id = Some(template_id);
                self.version = version;
                self.parts = Some(parts);
            }
            TemplateEvent::TemplateReset {
                template_id,
                version,
                ..
            } => {
                self.template_id = Some(template_id);
                self.version = version;
                self.parts = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn id() -> TemplateId {
        TemplateId::parse("build_finished.push.de").unwrap()
    }

    fn parts(body: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("title".to_owned(), "{{headline}}".to_owned()),
            ("body".to_owned(), body.to_owned()),
        ])
    }

    fn saved(version: u32, body: &str) -> TemplateEvent {
        TemplateEvent::TemplateVersionSaved {
            template_id: id(),
            version,
            parts: parts(body),
            saved_by: "key:ann".into(),
            saved_at: at(version.into()),
        }
    }

    fn save(body: &str, expected_version: Option<u32>) -> TemplateCommand {
        TemplateCommand::SaveVersion {
            template_id: id(),
            parts: parts(body),
            expected_version,
            by: "key:ann".into(),
            at: at(9),
        }
    }

    #[test]
    fn ids_name_exactly_twelve_templates() {
        let all = TemplateId::all();
        assert_eq!(all.len(), 12);
        for template in &all {
            assert_eq!(
                TemplateId::parse(&template.to_string()).as_ref(),
                Ok(template)
            );
        }
        for bad in [
            "",
            "build_finished.telegram",
            "build_finished.telegram.fr",
            "build_finished.sms.en",
            "build_finished.telegram.en.x",
            "Build_Finished.telegram.en",
            "build_finished.telegram.de-AT",
        ] {
            assert!(TemplateId::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            serde_json::to_value(id()).unwrap(),
            serde_json::json!("build_finished.push.de")
        );
    }

    #[test]
    fn parts_must_be_the_channels_own() {
        assert_eq!(check_parts(TemplateChannel::Push, &parts("x")), Ok(()));
        let mut extra = parts("x");
        extra.insert("html".into(), String::new());
        assert_eq!(
            check_parts(TemplateChannel::Push, &extra)
                .unwrap_err()
                .part(),
            "html"
        );
        let mut missing = parts("x");
        missing.remove("title");
        assert_eq!(
            check_parts(TemplateChannel::Push, &missing)
                .unwrap_err()
                .part(),
            "title"
        );
        let long = parts(&"x".repeat(MAX_PART_CHARS + 1));
        assert!(matches!(
            check_parts(TemplateChannel::Push, &long),
            Err(PartsError::TooLong { .. })
        ));
    }

    #[test]
    fn each_save_is_a_new_version_and_the_same_text_records_nothing() {
        TestFramework::<Template>::with(())
            .given_no_previous_events()
            .when(save("a", Some(0)))
            .then_expect_events(vec![TemplateEvent::TemplateVersionSaved {
                template_id: id(),
                version: 1,
                parts: parts("a"),
                saved_by: "key:ann".into(),
                saved_at: at(9),
            }]);
        TestFramework::<Template>::with(())
            .given(vec![saved(1, "a")])
            .when(save("a", None))
            .then_expect_events(vec![]);
        TestFramework::<Template>::with(())
            .given(vec![saved(1, "a")])
            .when(save("b", None))
            .then_expect_events(vec![TemplateEvent::TemplateVersionSaved {
                template_id: id(),
                version: 2,
                parts: parts("b"),
                saved_by: "key:ann".into(),
                saved_at: at(9),
            }]);
    }

    #[test]
    fn a_stale_expected_version_is_a_conflict() {
        TestFramework::<Template>::with(())
            .given(vec![saved(1, "a"), saved(2, "b")])
            .when(save("c", Some(1)))
            .then_expect_error(TemplateVersionError::Conflict {
                template_id: id(),
                expected: 1,
                current: 2,
            });
    }

    #[test]
    fn a_reset_is_a_new_version_and_only_when_customised() {
        let reset = TemplateCommand::Reset {
            template_id: id(),
            by: "key:bob".into(),
            at: at(9),
        };
        TestFramework::<Template>::with(())
            .given_no_previous_events()
            .when(reset.clone())
            .then_expect_events(vec![]);
        TestFramework::<Template>::with(())
            .given(vec![saved(1, "a")])
            .when(reset.clone())
            .then_expect_events(vec![TemplateEvent::TemplateReset {
                template_id: id(),
                version: 2,
                reset_by: "key:bob".into(),
                reset_at: at(9),
            }]);
        // After a reset, saving the old text again is a change.
        TestFramework::<Template>::with(())
            .given(vec![
                saved(1, "a"),
                TemplateEvent::TemplateReset {
                    template_id: id(),
                    version: 2,
                    reset_by: "key:bob".into(),
                    reset_at: at(2),
                },
            ])
            .when(save("a", Some(2)))
            .then_expect_events(vec![TemplateEvent::TemplateVersionSaved {
                template_id: id(),
                version: 3,
                parts: parts("a"),
                saved_by: "key:ann".into(),
                saved_at: at(9),
            }]);
    }
}
