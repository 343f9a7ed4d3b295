//! Everything the bot says, in every language Herald speaks, as Telegram HTML (`parse_mode=HTML`).
//!
//! Every answer is one [`Answer`] variant so that a new answer cannot be added in one language only (the
//! `match`es below would not compile), and every value that comes from a user or from stored data goes
//! through [`escape_html`]: a project named `<b>` must not break (or forge) a message.
//!
//! Outcome filters and build outcomes are shown as their machine words (`failed`, `still_failing`) in every
//! language, because those are the words `/subscribe` accepts back.

use chrono::{DateTime, Utc};
use domain::{Language, OutcomeFilter};

use super::command::{self, BotCommand, ParseError};

/// Telegram refuses a message longer than this many characters (counted after entities are parsed, so
/// counting the HTML's characters stays on the safe side).
pub const MESSAGE_LIMIT: usize = 4096;

/// Room kept free below [`MESSAGE_LIMIT`] for the "… and N more" line of a cut list.
const MORE_LINE_RESERVE: usize = 100;

/// Telegram command names are at most 32 characters; a longer "unknown command" is cut to that.
const SHOWN_COMMAND_MAX_CHARS: usize = 32;

/// Every outcome filter, in the order the help lists them.
const OUTCOME_FILTERS: [OutcomeFilter; 8] = [
    OutcomeFilter::All,
    OutcomeFilter::Succeeded,
    OutcomeFilter::Failed,
    OutcomeFilter::Cancelled,
    OutcomeFilter::Broken,
    OutcomeFilter::Fixed,
    OutcomeFilter::StillFailing,
    OutcomeFilter::Started,
];

/// Escape text for Telegram's HTML parse mode, where only `&`, `<` and `>` are special outside attributes.
pub fn escape_html(s: &str) -> String {
    let mut escaped = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

/// Escape a double-quoted attribute value (a link's `href`), where `"` ends the value.
fn escape_attribute(s: &str) -> String {
    escape_html(s).replace('"', "&quot;")
}

/// One subscribed project in `/list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListItem {
    pub project: String,
    /// Branch globs; empty means every branch.
    pub branches: Vec<String>,
    /// Empty means the default set.
    pub outcomes: Vec<OutcomeFilter>,
}

/// One build in `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    pub workflow: String,
    pub branch: Option<String>,
    /// The outcome's machine word (`succeeded`, `timed_out`, …); `None` while the build is running.
    pub outcome: Option<String>,
    pub url: Option<String>,
    pub at: DateTime<Utc>,
}

/// Every answer the bot gives, with the data it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'a> {
    Help,
    /// `/start` without a code: how to get a link code.
    Welcome,
    /// The chat is now linked to the subscriber named.
    Linked {
        subscriber: &'a str,
    },
    /// An unknown, used or expired link code.
    LinkCodeInvalid,
    /// The command needs a linked chat.
    NotLinked,
    Subscribed {
        project: &'a str,
        branch: Option<&'a str>,
        outcomes: &'a [OutcomeFilter],
    },
    AlreadySubscribed {
        project: &'a str,
    },
    Unsubscribed {
        project: &'a str,
        count: usize,
    },
    NotSubscribed {
        project: &'a str,
    },
    /// `/unsubscribe` without a project.
    UnsubscribeWhich,
    List {
        items: &'a [ListItem],
    },
    /// `None`: until `/unmute`.
    Muted {
        until: Option<DateTime<Utc>>,
    },
    Unmuted,
    Status {
        project: &'a str,
        builds: &'a [StatusLine],
    },
    UnknownProject {
        project: &'a str,
    },
    /// In a group only chat administrators may change subscriptions.
    NotAllowed,
    /// What was wrong with the command, and how to use it.
    Error(&'a ParseError),
    /// Something went wrong on Herald's side.
    Failed,
}

impl Answer<'_> {
    /// The answer as Telegram HTML in `language`, at most [`MESSAGE_LIMIT`] characters.
    pub fn render(&self, language: Language) -> String {
        match *self {
            Self::Help => help(language),
            Self::Welcome => welcome(language).to_owned(),
            Self::Linked { subscriber } => linked(language, subscriber),
            Self::LinkCodeInvalid => link_code_invalid(language).to_owned(),
            Self::NotLinked => not_linked(language).to_owned(),
            Self::Subscribed {
                project,
                branch,
                outcomes,
            } => subscribed(language, project, branch, outcomes),
            Self::AlreadySubscribed { project } => already_subscribed(language, project),
            Self::Unsubscribed { project, count } => unsubscribed(language, project, count),
            Self::NotSubscribed { project } => not_subscribed(language, project),
            Self::UnsubscribeWhich => unsubscribe_which(language).to_owned(),
            Self::List { items } => list(language, items),
            Self::Muted { until } => muted(language, until),
            Self::Unmuted => unmuted(language).to_owned(),
            Self::Status { project, builds } => status(language, project, builds),
            Self::UnknownProject { project } => unknown_project(language, project),
            Self::NotAllowed => not_allowed(language).to_owned(),
            Self::Error(error) => parse_error(language, error),
            Self::Failed => failed(language).to_owned(),
        }
    }
}

/// The inline buttons the bot attaches to notifications and answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Button {
    Subscribe,
    Mute1h,
    Unmute,
}

impl Button {
    /// What pressing the button does; kept next to its label so "1 hour" cannot drift from the duration.
    /// `project` is used by [`Button::Subscribe`] only.
    pub fn command(self, project: &str) -> BotCommand {
        match self {
            Self::Subscribe => BotCommand::Subscribe {
                project: project.to_owned(),
                branch: None,
                outcomes: Vec::new(),
            },
            Self::Mute1h => BotCommand::Mute {
                duration: Some(chrono::Duration::hours(1)),
            },
            Self::Unmute => BotCommand::Unmute,
        }
    }
}

/// A button's label (plain text: Telegram does not parse HTML in buttons).
pub fn button_label(button: Button, language: Language) -> String {
    let label = match button {
        Button::Subscribe => pick(language, "🔔 Subscribe", "🔔 Abonnieren"),
        Button::Mute1h => pick(language, "🔕 Mute for 1 hour", "🔕 1 Stunde stummschalten"),
        Button::Unmute => pick(language, "🔔 Unmute", "🔔 Stummschaltung aufheben"),
    };
    label.to_owned()
}

/// The bot's command menu for Telegram's `setMyCommands`: every command with a plain-text description.
pub fn command_menu(language: Language) -> Vec<(&'static str, &'static str)> {
    command::COMMANDS
        .iter()
        .map(|&name| (name, description(name, language)))
        .collect()
}

fn pick(language: Language, en: &'static str, de: &'static str) -> &'static str {
    match language {
        Language::En => en,
        Language::De => de,
    }
}

/// How a command is used, as Telegram HTML.
fn usage(command: &str, language: Language) -> &'static str {
    match command {
        command::START => pick(language, "/start &lt;code&gt;", "/start &lt;Code&gt;"),
        command::SUBSCRIBE => pick(
            language,
            "/subscribe &lt;project&gt; [branch] [outcomes]",
            "/subscribe &lt;Projekt&gt; [Branch] [Ergebnisse]",
        ),
        command::UNSUBSCRIBE => pick(
            language,
            "/unsubscribe &lt;project&gt;",
            "/unsubscribe &lt;Projekt&gt;",
        ),
        command::LIST => "/list",
        command::MUTE => pick(language, "/mute [duration]", "/mute [Dauer]"),
        command::UNMUTE => "/unmute",
        command::STATUS => pick(
            language,
            "/status &lt;project&gt;",
            "/status &lt;Projekt&gt;",
        ),
        _ => "/help",
    }
}

/// What a command does, in a few plain-text words (shared by the help and the command menu).
fn description(command: &str, language: Language) -> &'static str {
    match command {
        command::START => pick(
            language,
            "link this chat to Herald",
            "diesen Chat mit Herald verknüpfen",
        ),
        command::SUBSCRIBE => pick(
            language,
            "get notified about a project's builds",
            "über die Builds eines Projekts benachrichtigt werden",
        ),
        command::UNSUBSCRIBE => pick(
            language,
            "stop notifications for a project",
            "Benachrichtigungen für ein Projekt beenden",
        ),
        command::LIST => pick(language, "show your subscriptions", "deine Abos anzeigen"),
        command::MUTE => pick(
            language,
            "pause notifications (without a duration: until /unmute)",
            "Benachrichtigungen pausieren (ohne Dauer: bis /unmute)",
        ),
        command::UNMUTE => pick(
            language,
            "resume notifications",
            "Benachrichtigungen fortsetzen",
        ),
        command::STATUS => pick(
            language,
            "latest builds of a project",
            "letzte Builds eines Projekts",
        ),
        _ => pick(language, "show this help", "diese Hilfe anzeigen"),
    }
}

fn outcome_filter_names() -> String {
    OUTCOME_FILTERS.map(OutcomeFilter::as_str).join(", ")
}

fn help(language: Language) -> String {
    let commands: Vec<String> = command::COMMANDS
        .iter()
        .map(|&name| {
            format!(
                "{} – {}",
                usage(name, language),
                escape_html(description(name, language))
            )
        })
        .collect();
    let filters = outcome_filter_names();
    let days = command::MAX_MUTE.num_days();
    match language {
        Language::En => format!(
            "ℹ️ <b>Herald</b> tells you how your builds end.\n\n{}\n\n\
             <b>Branch</b>: a glob such as <code>main</code> or <code>release/*</code> (default: every branch).\n\
             <b>Outcomes</b>: comma separated, from <code>{filters}</code>.\n\
             <b>Duration</b>: <code>30m</code>, <code>2h</code>, <code>1d</code>, <code>1w</code> or \
             <code>1h30m</code>, at most {days} days.\n\
             Project names with spaces go in quotes.\n\n\
             Example: <code>/subscribe acme/api main failed,fixed</code>",
            commands.join("\n")
        ),
        Language::De => format!(
            "ℹ️ <b>Herald</b> sagt dir, wie deine Builds ausgehen.\n\n{}\n\n\
             <b>Branch</b>: ein Muster wie <code>main</code> oder <code>release/*</code> (ohne Angabe: alle Branches).\n\
             <b>Ergebnisse</b>: durch Kommas getrennt, aus <code>{filters}</code>.\n\
             <b>Dauer</b>: <code>30m</code>, <code>2h</code>, <code>1d</code>, <code>1w</code> oder \
             <code>1h30m</code>, höchstens {days} Tage.\n\
             Projektnamen mit Leerzeichen gehören in Anführungszeichen.\n\n\
             Beispiel: <code>/subscribe acme/api main failed,fixed</code>",
            commands.join("\n")
        ),
    }
}

fn welcome(language: Language) -> &'static str {
    pick(
        language,
        "👋 Hi! I am Herald's bot: I let you know when your builds fail, get fixed, or whatever else you choose.\n\n\
         First link this chat to Herald: create a link code on Herald's web page (or through its API) and send \
         it here as /start &lt;code&gt;, or simply open the link Herald gives you.\n\n\
         Send /help to see everything I can do.",
        "👋 Hallo! Ich bin der Bot von Herald: Ich sage dir Bescheid, wenn deine Builds fehlschlagen, wieder laufen \
         oder was auch immer du auswählst.\n\n\
         Verknüpfe zuerst diesen Chat mit Herald: Erstelle auf der Webseite von Herald (oder über die API) einen \
         Verknüpfungscode und sende ihn hier als /start &lt;Code&gt; – oder öffne einfach den Link, den Herald \
         dir gibt.\n\n\
         Mit /help siehst du alles, was ich kann.",
    )
}

fn linked(language: Language, subscriber: &str) -> String {
    let subscriber = escape_html(subscriber);
    match language {
        Language::En => format!(
            "✅ This chat is now linked to <b>{subscriber}</b>.\n\
             Subscribe to a project with /subscribe &lt;project&gt;, or send /help."
        ),
        Language::De => format!(
            "✅ Dieser Chat ist jetzt mit <b>{subscriber}</b> verknüpft.\n\
             Abonniere ein Projekt mit /subscribe &lt;Projekt&gt; oder sende /help."
        ),
    }
}

fn link_code_invalid(language: Language) -> &'static str {
    pick(
        language,
        "❌ This link code is unknown, already used or expired. Create a new one in Herald and send \
         /start &lt;code&gt; again.",
        "❌ Dieser Verknüpfungscode ist unbekannt, schon benutzt oder abgelaufen. Erstelle in Herald einen \
         neuen und sende erneut /start &lt;Code&gt;.",
    )
}

fn not_linked(language: Language) -> &'static str {
    pick(
        language,
        "⚠️ This chat is not linked to Herald yet. First send /start &lt;code&gt; with a link code from Herald.",
        "⚠️ Dieser Chat ist noch nicht mit Herald verknüpft. Sende zuerst /start &lt;Code&gt; mit einem \
         Verknüpfungscode aus Herald.",
    )
}

/// Branch globs for display; none means every branch.
fn branches_text(language: Language, branches: &[&str]) -> String {
    if branches.is_empty() {
        return pick(language, "every branch", "alle Branches").to_owned();
    }
    branches
        .iter()
        .map(|b| format!("<code>{}</code>", escape_html(b)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Outcome filters for display; none means the caller's default set.
fn outcomes_text(language: Language, outcomes: &[OutcomeFilter]) -> String {
    if outcomes.is_empty() {
        return pick(language, "the default set", "die Standardauswahl").to_owned();
    }
    outcomes
        .iter()
        .map(|o| o.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn subscribed(
    language: Language,
    project: &str,
    branch: Option<&str>,
    outcomes: &[OutcomeFilter],
) -> String {
    let project = escape_html(project);
    let branches = branches_text(language, branch.as_slice());
    let outcomes = outcomes_text(language, outcomes);
    match language {
        Language::En => {
            format!("✅ Subscribed to <b>{project}</b>.\nBranch: {branches}\nOutcomes: {outcomes}")
        }
        Language::De => {
            format!("✅ <b>{project}</b> abonniert.\nBranch: {branches}\nErgebnisse: {outcomes}")
        }
    }
}

fn already_subscribed(language: Language, project: &str) -> String {
    let project = escape_html(project);
    match language {
        Language::En => format!("ℹ️ You are already subscribed to <b>{project}</b>. See /list."),
        Language::De => format!("ℹ️ Du hast <b>{project}</b> bereits abonniert. Siehe /list."),
    }
}

fn unsubscribed(language: Language, project: &str, count: usize) -> String {
    if count == 0 {
        // Nothing was removed: say so rather than confirm "0 subscriptions removed".
        return not_subscribed(language, project);
    }
    let project = escape_html(project);
    match (language, count) {
        (Language::En, 1) => format!("✅ Unsubscribed from <b>{project}</b>."),
        (Language::En, _) => format!("✅ Removed {count} subscriptions to <b>{project}</b>."),
        (Language::De, 1) => format!("✅ <b>{project}</b> abbestellt."),
        (Language::De, _) => format!("✅ {count} Abos für <b>{project}</b> entfernt."),
    }
}

fn not_subscribed(language: Language, project: &str) -> String {
    let project = escape_html(project);
    match language {
        Language::En => format!("ℹ️ You are not subscribed to <b>{project}</b>. See /list."),
        Language::De => format!("ℹ️ Du hast <b>{project}</b> nicht abonniert. Siehe /list."),
    }
}

fn unsubscribe_which(language: Language) -> &'static str {
    pick(
        language,
        "❓ Which project? Send /unsubscribe &lt;project&gt;; /list shows your subscriptions.",
        "❓ Welches Projekt? Sende /unsubscribe &lt;Projekt&gt;; /list zeigt deine Abos.",
    )
}

fn list(language: Language, items: &[ListItem]) -> String {
    if items.is_empty() {
        return pick(
            language,
            "📭 You have no subscriptions yet. Start with /subscribe &lt;project&gt;.",
            "📭 Du hast noch keine Abos. Fang mit /subscribe &lt;Projekt&gt; an.",
        )
        .to_owned();
    }
    let header = pick(
        language,
        "📋 <b>Your subscriptions</b>",
        "📋 <b>Deine Abos</b>",
    );
    let lines = items.iter().map(|item| {
        let branches: Vec<&str> = item.branches.iter().map(String::as_str).collect();
        format!(
            "• <b>{}</b> – {} – {}",
            escape_html(&item.project),
            branches_text(language, &branches),
            outcomes_text(language, &item.outcomes)
        )
    });
    within_limit(header, lines, language)
}

/// The time as shown to users; always UTC, since the bot does not know the reader's time zone.
fn format_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn muted(language: Language, until: Option<DateTime<Utc>>) -> String {
    match (language, until.map(format_time)) {
        (Language::En, None) => "🔕 Notifications muted until you send /unmute.".to_owned(),
        (Language::En, Some(until)) => {
            format!("🔕 Notifications muted until {until}. /unmute ends it sooner.")
        }
        (Language::De, None) => {
            "🔕 Benachrichtigungen stummgeschaltet, bis du /unmute sendest.".to_owned()
        }
        (Language::De, Some(until)) => {
            format!(
                "🔕 Benachrichtigungen stummgeschaltet bis {until}. Mit /unmute früher beenden."
            )
        }
    }
}

fn unmuted(language: Language) -> &'static str {
    pick(
        language,
        "🔔 Notifications are back on.",
        "🔔 Benachrichtigungen sind wieder eingeschaltet.",
    )
}

fn status(language: Language, project: &str, builds: &[StatusLine]) -> String {
    let project = escape_html(project);
    if builds.is_empty() {
        return match language {
            Language::En => format!("📭 No builds of <b>{project}</b> yet."),
            Language::De => format!("📭 Noch keine Builds von <b>{project}</b>."),
        };
    }
    let header = match language {
        Language::En => format!("📊 <b>{project}</b>: latest builds"),
        Language::De => format!("📊 <b>{project}</b>: letzte Builds"),
    };
    let lines = builds.iter().map(|build| status_line(language, build));
    within_limit(&header, lines, language)
}

/// `✅ <a href="…">CI</a> · <code>main</code> · succeeded · 2024-05-01 12:00 UTC`
fn status_line(language: Language, build: &StatusLine) -> String {
    let mut parts = vec![format!(
        "{} {}",
        outcome_symbol(build.outcome.as_deref()),
        workflow_link(&build.workflow, build.url.as_deref())
    )];
    if let Some(branch) = &build.branch {
        parts.push(format!("<code>{}</code>", escape_html(branch)));
    }
    parts.push(match &build.outcome {
        Some(outcome) => escape_html(outcome),
        None => pick(language, "running", "läuft").to_owned(),
    });
    parts.push(format_time(build.at));
    parts.join(" · ")
}

fn outcome_symbol(outcome: Option<&str>) -> &'static str {
    match outcome {
        None => "🔄",
        Some("succeeded") => "✅",
        Some("failed" | "timed_out") => "❌",
        Some(_) => "⚪",
    }
}

/// The workflow's name, linked to the build when there is a web URL. Other schemes (`javascript:`) are
/// not linked: Telegram may refuse them, and they are never what a CI system means by a build page.
fn workflow_link(workflow: &str, url: Option<&str>) -> String {
    let name = escape_html(workflow);
    match url.filter(|u| is_web_url(u)) {
        Some(url) => format!("<a href=\"{}\">{name}</a>", escape_attribute(url)),
        None => format!("<b>{name}</b>"),
    }
}

fn is_web_url(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

/// `header` and as many `lines` as fit below [`MESSAGE_LIMIT`], then how many were left out, so a long
/// list is cut between lines (never inside a tag) instead of being refused by Telegram.
fn within_limit(
    header: &str,
    lines: impl ExactSizeIterator<Item = String>,
    language: Language,
) -> String {
    let total = lines.len();
    let budget = MESSAGE_LIMIT - MORE_LINE_RESERVE;
    let mut message = header.to_owned();
    let mut length = message.chars().count();
    let mut shown = 0;
    for line in lines {
        let line_length = line.chars().count() + 1;
        if length + line_length > budget {
            break;
        }
        message.push('\n');
        message.push_str(&line);
        length += line_length;
        shown += 1;
    }
    if shown < total {
        let more = total - shown;
        message.push_str(&match language {
            Language::En => format!("\n… and {more} more"),
            Language::De => format!("\n… und {more} weitere"),
        });
    }
    message
}

fn unknown_project(language: Language, project: &str) -> String {
    let project = escape_html(project);
    match language {
        Language::En => format!(
            "❌ There is no project named <b>{project}</b>. Check the spelling (names may contain a \
             slash, like acme/api)."
        ),
        Language::De => format!(
            "❌ Es gibt kein Projekt namens <b>{project}</b>. Prüfe die Schreibweise (Namen können einen \
             Schrägstrich enthalten, etwa acme/api)."
        ),
    }
}

fn not_allowed(language: Language) -> &'static str {
    pick(
        language,
        "⚠️ In a group, only the chat's administrators may change subscriptions.",
        "⚠️ In einer Gruppe dürfen nur die Administratoren des Chats Abos ändern.",
    )
}

fn failed(language: Language) -> &'static str {
    pick(
        language,
        "⚠️ Something went wrong on Herald's side. Please try again later.",
        "⚠️ Bei Herald ist etwas schiefgelaufen. Bitte versuche es später noch einmal.",
    )
}

fn parse_error(language: Language, error: &ParseError) -> String {
    match error {
        ParseError::NotACommand => pick(
            language,
            "🤔 I only understand commands. Send /help to see them.",
            "🤔 Ich verstehe nur Befehle. Sende /help, um sie zu sehen.",
        )
        .to_owned(),
        ParseError::NotForThisBot => pick(
            language,
            "ℹ️ That command was meant for another bot.",
            "ℹ️ Dieser Befehl war für einen anderen Bot gedacht.",
        )
        .to_owned(),
        ParseError::Unknown(name) => unknown_command(language, name),
        ParseError::MissingArgument { command, argument } => {
            missing_argument(language, command, argument)
        }
        ParseError::BadDuration(duration) => bad_duration(language, duration),
        ParseError::BadOutcome(word) => bad_outcome(language, word),
        ParseError::BadLinkCode => bad_link_code(language),
        ParseError::TooManyArguments(command) => too_many_arguments(language, command),
    }
}

/// `Usage: …` in the answer's language, on a line of its own.
fn usage_line(language: Language, command: &str) -> String {
    let usage = usage(command, language);
    match language {
        Language::En => format!("\nUsage: {usage}"),
        Language::De => format!("\nVerwendung: {usage}"),
    }
}

fn unknown_command(language: Language, name: &str) -> String {
    let shown: String = name.chars().take(SHOWN_COMMAND_MAX_CHARS).collect();
    let shown = escape_html(&shown);
    match language {
        Language::En => {
            format!("❌ I don't know the command /{shown}. Send /help to see the ones I know.")
        }
        Language::De => format!(
            "❌ Den Befehl /{shown} kenne ich nicht. Sende /help, um alle Befehle zu sehen."
        ),
    }
}

fn missing_argument(language: Language, command: &str, argument: &str) -> String {
    let needed = match (language, argument) {
        (Language::En, "project") => "a project".to_owned(),
        (Language::De, "project") => "ein Projekt".to_owned(),
        (Language::En, other) => format!("a {}", escape_html(other)),
        (Language::De, other) => format!("das Argument „{}“", escape_html(other)),
    };
    let command_shown = escape_html(command);
    let usage = usage_line(language, command);
    match language {
        Language::En => format!("❌ /{command_shown} needs {needed}.{usage}"),
        Language::De => format!("❌ /{command_shown} braucht {needed}.{usage}"),
    }
}

fn bad_duration(language: Language, duration: &str) -> String {
    let duration = escape_html(duration);
    let days = command::MAX_MUTE.num_days();
    let usage = usage_line(language, command::MUTE);
    match language {
        Language::En => format!(
            "❌ I can't read the duration “{duration}”. Use e.g. 30m, 2h, 1d, 1w or 1h30m (at most \
             {days} days).{usage}"
        ),
        Language::De => format!(
            "❌ Die Dauer „{duration}“ verstehe ich nicht. Nutze z. B. 30m, 2h, 1d, 1w oder 1h30m \
             (höchstens {days} Tage).{usage}"
        ),
    }
}

fn bad_outcome(language: Language, word: &str) -> String {
    let word = escape_html(word);
    let filters = outcome_filter_names();
    let usage = usage_line(language, command::SUBSCRIBE);
    match language {
        Language::En => format!(
            "❌ Unknown outcome “{word}”. Choose one or more, comma separated: {filters}.{usage}"
        ),
        Language::De => format!(
            "❌ Unbekanntes Ergebnis „{word}“. Wähle eines oder mehrere, durch Kommas getrennt: {filters}.{usage}"
        ),
    }
}

fn bad_link_code(language: Language) -> String {
    let text = pick(
        language,
        "❌ That is not a valid link code. Link codes come from Herald and consist of letters, digits, _ and -.",
        "❌ Das ist kein gültiger Verknüpfungscode. Codes stammen aus Herald und bestehen aus Buchstaben, \
         Ziffern, _ und -.",
    );
    format!("{text}{}", usage_line(language, command::START))
}

fn too_many_arguments(language: Language, command: &str) -> String {
    let command_shown = escape_html(command);
    let takes_project = matches!(
        command,
        command::SUBSCRIBE | command::UNSUBSCRIBE | command::STATUS
    );
    let quote_hint = match (language, takes_project) {
        (_, false) => "",
        (Language::En, true) => " Project names with spaces go in quotes.",
        (Language::De, true) => " Projektnamen mit Leerzeichen gehören in Anführungszeichen.",
    };
    let usage = usage_line(language, command);
    match language {
        Language::En => {
            format!("❌ Too many arguments for /{command_shown}.{quote_hint}{usage}")
        }
        Language::De => {
            format!("❌ Zu viele Argumente für /{command_shown}.{quote_hint}{usage}")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use chrono::TimeZone;

    use super::*;

    const EVIL: &str = "<script>alert(1)</script>";

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 34, 56).unwrap()
    }

    fn parse_errors() -> Vec<ParseError> {
        vec![
            ParseError::NotACommand,
            ParseError::NotForThisBot,
            ParseError::Unknown("frobnicate".into()),
            ParseError::MissingArgument {
                command: command::SUBSCRIBE,
                argument: "project",
            },
            ParseError::MissingArgument {
                command: command::STATUS,
                argument: "project",
            },
            ParseError::BadDuration("soon".into()),
            ParseError::BadOutcome("sometimes".into()),
            ParseError::BadLinkCode,
            ParseError::TooManyArguments(command::SUBSCRIBE),
            ParseError::TooManyArguments(command::LIST),
        ]
    }

    fn list_items(project: &str) -> Vec<ListItem> {
        vec![
            ListItem {
                project: project.to_owned(),
                branches: vec!["main".into(), "release/*".into()],
                outcomes: vec![OutcomeFilter::Failed, OutcomeFilter::Fixed],
            },
            ListItem {
                project: "web".into(),
                branches: Vec::new(),
                outcomes: Vec::new(),
            },
        ]
    }

    fn status_lines(text: &str) -> Vec<StatusLine> {
        let line = |outcome: Option<&str>| StatusLine {
            workflow: text.to_owned(),
            branch: Some(text.to_owned()),
            outcome: outcome.map(str::to_owned),
            url: Some("https://ci.example/run?id=1&attempt=2".into()),
            at: at(),
        };
        vec![
            line(Some("succeeded")),
            line(Some("failed")),
            line(Some("timed_out")),
            line(Some("cancelled")),
            line(None),
        ]
    }

    /// Every answer once (two for answers whose shape depends on the data), with `text` wherever an answer
    /// shows user-supplied data.
    fn render_all(text: &str, language: Language) -> Vec<String> {
        let outcomes = [OutcomeFilter::Failed, OutcomeFilter::StillFailing];
        let items = list_items(text);
        let builds = status_lines(text);
        let unknown = ParseError::Unknown(text.to_owned());
        let duration = ParseError::BadDuration(text.to_owned());
        let outcome = ParseError::BadOutcome(text.to_owned());
        let mut answers = vec![
            Answer::Help,
            Answer::Welcome,
            Answer::Linked { subscriber: text },
            Answer::LinkCodeInvalid,
            Answer::NotLinked,
            Answer::Subscribed {
                project: text,
                branch: Some(text),
                outcomes: &outcomes,
            },
            Answer::Subscribed {
                project: text,
                branch: None,
                outcomes: &[],
            },
            Answer::AlreadySubscribed { project: text },
            Answer::Unsubscribed {
                project: text,
                count: 1,
            },
            Answer::Unsubscribed {
                project: text,
                count: 3,
            },
            Answer::NotSubscribed { project: text },
            Answer::UnsubscribeWhich,
            Answer::List { items: &items },
            Answer::List { items: &[] },
            Answer::Muted { until: Some(at()) },
            Answer::Muted { until: None },
            Answer::Unmuted,
            Answer::Status {
                project: text,
                builds: &builds,
            },
            Answer::Status {
                project: text,
                builds: &[],
            },
            Answer::UnknownProject { project: text },
            Answer::NotAllowed,
            Answer::Error(&unknown),
            Answer::Error(&duration),
            Answer::Error(&outcome),
            Answer::Failed,
        ]
        .into_iter()
        .map(|answer| answer.render(language))
        .collect::<Vec<_>>();
        let errors = parse_errors();
        answers.extend(errors.iter().map(|e| Answer::Error(e).render(language)));
        answers
    }

    /// Would Telegram's HTML parser accept this? Only the tags we use, and every `&` starts an entity.
    fn assert_valid_telegram_html(html: &str) {
        let mut rest = html;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("unclosed tag") + start;
            let tag = &rest[start + 1..end];
            let name = tag.trim_start_matches('/').split(' ').next().unwrap();
            assert!(["b", "code", "a"].contains(&name), "tag {tag:?} in {html}");
            assert!(!tag.contains('"') || tag.starts_with("a href=\""), "{tag}");
            rest = &rest[end + 1..];
        }
        assert!(!rest.contains('>'), "stray > in {html}");
        for (i, _) in html.match_indices('&') {
            let entity = &html[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;"]
                    .iter()
                    .any(|e| entity.starts_with(e)),
                "bare & in {html}"
            );
        }
        assert!(html.chars().count() <= MESSAGE_LIMIT);
    }

    #[test]
    fn escaping_covers_telegrams_special_characters() {
        assert_eq!(
            escape_html("a < b && c > d"),
            "a &lt; b &amp;&amp; c &gt; d"
        );
        assert_eq!(escape_html("\"quoted\" ü"), "\"quoted\" ü");
        assert_eq!(
            escape_attribute("https://x/?a=1&b=\"2\""),
            "https://x/?a=1&amp;b=&quot;2&quot;"
        );
    }

    #[test]
    fn every_answer_renders_distinct_non_empty_text_in_both_languages() {
        for language in Language::ALL {
            let answers = render_all("acme/api", language);
            for answer in &answers {
                assert!(!answer.trim().is_empty());
                assert_valid_telegram_html(answer);
            }
            let distinct: HashSet<_> = answers.iter().collect();
            assert_eq!(distinct.len(), answers.len(), "{language:?}: {answers:#?}");
        }
    }

    #[test]
    fn german_differs_from_english_for_every_answer() {
        let english = render_all("acme/api", Language::En);
        let german = render_all("acme/api", Language::De);
        assert_eq!(english.len(), german.len());
        for (en, de) in english.iter().zip(&german) {
            assert_ne!(en, de);
        }
        for button in [Button::Subscribe, Button::Mute1h, Button::Unmute] {
            assert_ne!(
                button_label(button, Language::En),
                button_label(button, Language::De)
            );
        }
        assert_ne!(command_menu(Language::En), command_menu(Language::De));
    }

    #[test]
    fn user_supplied_values_are_escaped_everywhere() {
        for language in Language::ALL {
            for answer in render_all(EVIL, language) {
                assert!(!answer.contains("<script>"), "{answer}");
                assert_valid_telegram_html(&answer);
            }
            let shown = Answer::UnknownProject { project: EVIL }.render(language);
            assert!(shown.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        }
    }

    #[test]
    fn subscribed_names_branch_and_outcomes() {
        let outcomes = [OutcomeFilter::Failed, OutcomeFilter::Fixed];
        let en = Answer::Subscribed {
            project: "acme/api",
            branch: Some("release/*"),
            outcomes: &outcomes,
        }
        .render(Language::En);
        assert!(en.starts_with("✅"));
        assert!(en.contains("<b>acme/api</b>"));
        assert!(en.contains("<code>release/*</code>"));
        assert!(en.contains("failed, fixed"));
        let de = Answer::Subscribed {
            project: "api",
            branch: None,
            outcomes: &[],
        }
        .render(Language::De);
        assert!(de.contains("alle Branches"));
        assert!(de.contains("Standardauswahl"));
    }

    #[test]
    fn unsubscribing_nothing_says_not_subscribed() {
        assert_eq!(
            Answer::Unsubscribed {
                project: "api",
                count: 0
            }
            .render(Language::En),
            Answer::NotSubscribed { project: "api" }.render(Language::En)
        );
    }

    #[test]
    fn mutes_show_their_end_in_utc() {
        let en = Answer::Muted { until: Some(at()) }.render(Language::En);
        assert!(en.starts_with("🔕"));
        assert!(en.contains("2024-05-01 12:34 UTC"));
        let de = Answer::Muted { until: None }.render(Language::De);
        assert!(de.contains("/unmute"));
        assert!(Answer::Unmuted.render(Language::De).starts_with("🔔"));
    }

    #[test]
    fn status_lines_show_symbol_workflow_branch_and_link() {
        let builds = status_lines("CI");
        let en = Answer::Status {
            project: "api",
            builds: &builds,
        }
        .render(Language::En);
        let lines: Vec<&str> = en.lines().skip(1).collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[0],
            "✅ <a href=\"https://ci.example/run?id=1&amp;attempt=2\">CI</a> · <code>CI</code> · succeeded · \
             2024-05-01 12:34 UTC"
        );
        assert!(lines[1].starts_with("❌ "));
        assert!(lines[2].starts_with("❌ "));
        assert!(lines[3].starts_with("⚪ "));
        assert!(lines[4].starts_with("🔄 ") && lines[4].contains("running"));
        let de = Answer::Status {
            project: "api",
            builds: &builds,
        }
        .render(Language::De);
        assert!(de.contains("läuft"));
    }

    #[test]
    fn only_web_urls_become_links() {
        let quoted = StatusLine {
            workflow: "CI".into(),
            branch: None,
            outcome: Some("failed".into()),
            url: Some("https://ci.example/\"><b>x".into()),
            at: at(),
        };
        let line = status_line(Language::En, &quoted);
        assert!(line.contains("href=\"https://ci.example/&quot;&gt;&lt;b&gt;x\""));
        let script = StatusLine {
            url: Some("javascript:alert(1)".into()),
            ..quoted
        };
        let line = status_line(Language::En, &script);
        assert!(!line.contains("href"));
        assert!(line.contains("<b>CI</b>"));
    }

    #[test]
    fn long_lists_are_cut_between_lines() {
        let items: Vec<ListItem> = (0..500)
            .map(|i| ListItem {
                project: format!("project-{i}"),
                branches: vec!["main".into()],
                outcomes: vec![OutcomeFilter::All],
            })
            .collect();
        for language in Language::ALL {
            let text = Answer::List { items: &items }.render(language);
            assert_valid_telegram_html(&text);
            assert!(text.contains("project-0"));
            assert!(!text.contains("project-499"));
            assert!(text.ends_with(pick(language, " more", " weitere")));
        }
    }

    #[test]
    fn errors_name_the_usage() {
        let missing = ParseError::MissingArgument {
            command: command::STATUS,
            argument: "project",
        };
        assert_eq!(
            Answer::Error(&missing).render(Language::En),
            "❌ /status needs a project.\nUsage: /status &lt;project&gt;"
        );
        assert_eq!(
            Answer::Error(&missing).render(Language::De),
            "❌ /status braucht ein Projekt.\nVerwendung: /status &lt;Projekt&gt;"
        );
        let outcome = ParseError::BadOutcome("sometimes".into());
        let de = Answer::Error(&outcome).render(Language::De);
        assert!(de.contains("„sometimes“") && de.contains("/subscribe &lt;Projekt&gt;"));
        let duration = ParseError::BadDuration("soon".into());
        assert!(Answer::Error(&duration)
            .render(Language::En)
            .contains("Usage: /mute [duration]"));
        assert!(Answer::Error(&ParseError::NotACommand)
            .render(Language::En)
            .contains("/help"));
        let long = ParseError::Unknown("x".repeat(100));
        assert!(!Answer::Error(&long)
            .render(Language::En)
            .contains(&"x".repeat(33)));
    }

    #[test]
    fn help_lists_every_command_and_outcome() {
        for language in Language::ALL {
            let help = Answer::Help.render(language);
            for name in command::COMMANDS {
                assert!(help.contains(&format!("/{name}")), "{name}");
            }
            for filter in OUTCOME_FILTERS {
                assert!(help.contains(filter.as_str()));
            }
        }
    }

    #[test]
    fn buttons_carry_emoji_and_match_their_commands() {
        assert!(button_label(Button::Subscribe, Language::En).starts_with('🔔'));
        assert!(button_label(Button::Mute1h, Language::De).starts_with('🔕'));
        assert!(button_label(Button::Unmute, Language::De).starts_with('🔔'));
        assert_eq!(
            command::callback_data(&Button::Mute1h.command("api")).as_deref(),
            Some("mute:3600")
        );
        assert_eq!(
            command::callback_data(&Button::Subscribe.command("acme/api")).as_deref(),
            Some("sub:acme/api")
        );
        assert_eq!(
            command::callback_data(&Button::Unmute.command("")).as_deref(),
            Some("unmute")
        );
    }

    #[test]
    fn the_command_menu_is_plain_text_within_telegrams_limits() {
        for language in Language::ALL {
            let menu = command_menu(language);
            assert_eq!(menu.len(), command::COMMANDS.len());
            for (name, description) in menu {
                assert!(!name.is_empty() && name.len() <= 32);
                assert!((3..=256).contains(&description.chars().count()));
                assert!(!description.contains(['<', '>', '&']));
            }
        }
    }
}
