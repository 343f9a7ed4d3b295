//! What a Telegram message (or a pressed button) asks the bot to do.
//!
//! Parsing is kept apart from acting on the command so that every rule a user can stumble over (an addressed
//! `/cmd@OtherBot` in a group, a branch glob that is really an outcome list, a typo in a duration) is decided
//! here, in one place, and answered with a [`ParseError`] that says exactly what was wrong.

use chrono::Duration;
use domain::OutcomeFilter;

/// Telegram refuses a button whose `callback_data` is longer than this many bytes.
pub const CALLBACK_DATA_LIMIT: usize = 64;

/// The longest mute: a mute is meant to be temporary, and a forgotten "forever" has `/mute` without a duration.
pub const MAX_MUTE: Duration = Duration::days(365);

/// Telegram allows at most 64 characters from `[A-Za-z0-9_-]` in a deep link's `start` payload.
const LINK_CODE_MAX_LEN: usize = 64;

/// Characters that open or close a quoted argument. Telegram clients on phones often replace `"` with
/// typographic quotes (`“…”`, German `„…“`), and a project name with a space must be quotable on any keyboard.
const QUOTES: [char; 4] = ['"', '“', '”', '„'];

/// The commands the bot understands, by the name typed after the slash.
pub const START: &str = "start";
pub const SUBSCRIBE: &str = "subscribe";
pub const UNSUBSCRIBE: &str = "unsubscribe";
pub const LIST: &str = "list";
pub const MUTE: &str = "mute";
pub const UNMUTE: &str = "unmute";
pub const STATUS: &str = "status";
pub const HELP: &str = "help";

/// Every command name, in the order the help text and Telegram's command menu list them.
pub const COMMANDS: [&str; 8] = [
    START,
    SUBSCRIBE,
    UNSUBSCRIBE,
    LIST,
    MUTE,
    UNMUTE,
    STATUS,
    HELP,
];

/// A command the bot understood, with its arguments already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BotCommand {
    /// `/start` or `/start <code>` (deep link payload: the one-time link code, `[A-Za-z0-9_-]{1,64}`).
    Start {
        code: Option<String>,
    },
    /// `/subscribe <project> [branch-glob] [outcomes]`; an empty `outcomes` means "the default set", which
    /// the caller decides so that the default lives next to the code that stores subscriptions.
    Subscribe {
        project: String,
        branch: Option<String>,
        outcomes: Vec<OutcomeFilter>,
    },
    /// `/unsubscribe <project>`; `/unsubscribe` alone (`None`) asks which one.
    Unsubscribe {
        project: Option<String>,
    },
    List,
    /// `/mute` alone (`None`) mutes until `/unmute`; otherwise for at most [`MAX_MUTE`].
    Mute {
        duration: Option<Duration>,
    },
    Unmute,
    Status {
        project: String,
    },
    Help,
}

impl BotCommand {
    /// The command's name as typed after the slash, e.g. for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Start { .. } => START,
            Self::Subscribe { .. } => SUBSCRIBE,
            Self::Unsubscribe { .. } => UNSUBSCRIBE,
            Self::List => LIST,
            Self::Mute { .. } => MUTE,
            Self::Unmute => UNMUTE,
            Self::Status { .. } => STATUS,
            Self::Help => HELP,
        }
    }
}

/// Why a message is not a command the bot can carry out. The `Display` text is for logs; users get the
/// translated answer from `i18n::Answer::Error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The text does not start with `/`.
    #[error("not a command")]
    NotACommand,
    /// `/cmd@OtherBot`: in a group this was meant for another bot, and the bot should stay silent.
    #[error("the command is addressed to another bot")]
    NotForThisBot,
    /// The command name (lowercased, without `@bot`) is not one of [`COMMANDS`].
    #[error("unknown command /{0}")]
    Unknown(String),
    #[error("/{command} needs a {argument}")]
    MissingArgument {
        command: &'static str,
        argument: &'static str,
    },
    /// The duration as typed.
    #[error("unreadable duration {0:?}")]
    BadDuration(String),
    /// The first word of an outcome list that is not an outcome filter.
    #[error("unknown outcome {0:?}")]
    BadOutcome(String),
    /// `/start` with a payload that cannot be a link code (no deep link produces one).
    #[error("malformed link code")]
    BadLinkCode,
    /// The command's name.
    #[error("too many arguments for /{0}")]
    TooManyArguments(&'static str),
}

/// Parse a message's text. `bot_username` is the bot's own username (with or without `@`); when it is known,
/// a command addressed to another bot (`/cmd@OtherBot`) is refused with [`ParseError::NotForThisBot`].
pub fn parse(text: &str, bot_username: Option<&str>) -> Result<BotCommand, ParseError> {
    let rest = text
        .trim_start()
        .strip_prefix('/')
        .ok_or(ParseError::NotACommand)?;
    let (head, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    // The addressee is checked before the name: an unknown command for another bot is none of our business.
    let name = command_name(head, bot_username)?;
    let args = tokenize(tail);
    match name.as_str() {
        START => start(args),
        SUBSCRIBE => subscribe(args),
        UNSUBSCRIBE => {
            let project = at_most_one(args, UNSUBSCRIBE)?;
            Ok(BotCommand::Unsubscribe { project })
        }
        LIST => no_arguments(args, LIST, BotCommand::List),
        MUTE => mute(args),
        UNMUTE => no_arguments(args, UNMUTE, BotCommand::Unmute),
        STATUS => {
            let project = at_most_one(args, STATUS)?.ok_or(ParseError::MissingArgument {
                command: STATUS,
                argument: "project",
            })?;
            Ok(BotCommand::Status { project })
        }
        // Asking for help should never end in an error, so `/help subscribe` is simply `/help`.
        HELP => Ok(BotCommand::Help),
        _ => Err(ParseError::Unknown(name)),
    }
}

/// The lowercased command name from `cmd` or `cmd@BotName`, refusing a command addressed to another bot.
fn command_name(head: &str, bot_username: Option<&str>) -> Result<String, ParseError> {
    let (name, addressee) = match head.split_once('@') {
        Some((name, addressee)) => (name, Some(addressee)),
        None => (head, None),
    };
    if let (Some(addressee), Some(own)) = (addressee, bot_username) {
        if !addressee.eq_ignore_ascii_case(own.trim_start_matches('@')) {
            return Err(ParseError::NotForThisBot);
        }
    }
    Ok(name.to_lowercase())
}

/// Split arguments on whitespace, keeping a quoted run (`"My App"`, `“My App”`, `„My App“`) as one argument
/// because project names may contain spaces. An unclosed quote runs to the end; empty arguments are dropped.
fn tokenize(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&first) = chars.peek() {
        if first.is_whitespace() {
            chars.next();
            continue;
        }
        let arg: String = if QUOTES.contains(&first) {
            chars.next();
            chars.by_ref().take_while(|c| !QUOTES.contains(c)).collect()
        } else {
            chars.by_ref().take_while(|c| !c.is_whitespace()).collect()
        };
        let arg = arg.trim();
        if !arg.is_empty() {
            args.push(arg.to_owned());
        }
    }
    args
}

fn start(args: Vec<String>) -> Result<BotCommand, ParseError> {
    let code = at_most_one(args, START)?;
    match code {
        Some(code) if !is_link_code(&code) => Err(ParseError::BadLinkCode),
        code => Ok(BotCommand::Start { code }),
    }
}

/// Could this be a link code? Checked here so a malformed one never reaches the database.
fn is_link_code(code: &str) -> bool {
    (1..=LINK_CODE_MAX_LEN).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn subscribe(args: Vec<String>) -> Result<BotCommand, ParseError> {
    let mut args = args.into_iter();
    let project = args.next().ok_or(ParseError::MissingArgument {
        command: SUBSCRIBE,
        argument: "project",
    })?;
    let (branch, outcomes) = match (args.next(), args.next()) {
        (None, _) => (None, Vec::new()),
        (Some(second), None) => branch_or_outcomes(second)?,
        (Some(branch), Some(outcomes)) => (Some(branch), parse_outcomes(&outcomes)?),
    };
    if args.next().is_some() {
        return Err(ParseError::TooManyArguments(SUBSCRIBE));
    }
    Ok(BotCommand::Subscribe {
        project,
        branch,
        outcomes,
    })
}

/// The second argument of `/subscribe` is a branch glob unless it is an outcome list, so that
/// `/subscribe api failed,fixed` needs no branch. A comma-separated list with at least one real outcome in
/// it is taken as a mistyped outcome list rather than an odd branch name, so the typo gets reported.
fn branch_or_outcomes(second: String) -> Result<(Option<String>, Vec<OutcomeFilter>), ParseError> {
    match parse_outcomes(&second) {
        Ok(outcomes) => Ok((None, outcomes)),
        Err(error) if second.contains(',') && second.split(',').any(|w| outcome(w).is_some()) => {
            Err(error)
        }
        Err(_) => Ok((Some(second), Vec::new())),
    }
}

/// A comma-separated outcome list (`failed,fixed`), without duplicates, in the order given.
fn parse_outcomes(list: &str) -> Result<Vec<OutcomeFilter>, ParseError> {
    let mut outcomes = Vec::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let filter = outcome(word).ok_or_else(|| ParseError::BadOutcome(word.to_owned()))?;
        if !outcomes.contains(&filter) {
            outcomes.push(filter);
        }
    }
    if outcomes.is_empty() {
        return Err(ParseError::BadOutcome(list.to_owned()));
    }
    Ok(outcomes)
}

/// One outcome filter, forgiving about case and `still-failing` versus `still_failing`.
fn outcome(word: &str) -> Option<OutcomeFilter> {
    word.trim().to_lowercase().replace('-', "_").parse().ok()
}

/// `/mute`, `/mute 2h`, `/mute 1h30m`; `/mute 1h 30m` too, since that is how [`format_duration`] writes it.
fn mute(args: Vec<String>) -> Result<BotCommand, ParseError> {
    if args.is_empty() {
        return Ok(BotCommand::Mute { duration: None });
    }
    let duration =
        parse_duration(&args.concat()).ok_or_else(|| ParseError::BadDuration(args.join(" ")))?;
    Ok(BotCommand::Mute {
        duration: Some(duration),
    })
}

/// A positive duration of at most [`MAX_MUTE`], written as number–unit pairs (`30m`, `2h`, `1d`, `1w`,
/// `1h30m`; `s` and `min` are read too). A bare number is refused: minutes or hours would be a guess.
fn parse_duration(spec: &str) -> Option<Duration> {
    let mut rest = spec;
    let mut seconds: i64 = 0;
    while !rest.is_empty() {
        let (amount, after) = split_at_first(rest, |c| !c.is_ascii_digit());
        let (unit, after) = split_at_first(after, |c| c.is_ascii_digit());
        let amount: i64 = amount.parse().ok()?;
        seconds = seconds.checked_add(amount.checked_mul(unit_seconds(unit)?)?)?;
        rest = after;
    }
    mute_from_seconds(seconds)
}

/// Split before the first character matching `at` (or not at all).
fn split_at_first(s: &str, at: impl Fn(char) -> bool) -> (&str, &str) {
    s.split_at(s.find(at).unwrap_or(s.len()))
}

fn unit_seconds(unit: &str) -> Option<i64> {
    match unit.to_ascii_lowercase().as_str() {
        "s" => Some(1),
        "m" | "min" => Some(60),
        "h" => Some(3_600),
        "d" => Some(86_400),
        "w" => Some(604_800),
        _ => None,
    }
}

/// The mute for this many seconds, if it is one the bot accepts (positive, at most [`MAX_MUTE`]).
fn mute_from_seconds(seconds: i64) -> Option<Duration> {
    (1..=MAX_MUTE.num_seconds())
        .contains(&seconds)
        .then(|| Duration::seconds(seconds))
}

fn at_most_one(args: Vec<String>, command: &'static str) -> Result<Option<String>, ParseError> {
    let mut args = args.into_iter();
    let first = args.next();
    match args.next() {
        Some(_) => Err(ParseError::TooManyArguments(command)),
        None => Ok(first),
    }
}

/// Arguments on an argument-less command are refused rather than ignored: `/unmute api` must not silently
/// unmute every project when the user believed it unmutes one.
fn no_arguments(
    args: Vec<String>,
    command: &'static str,
    parsed: BotCommand,
) -> Result<BotCommand, ParseError> {
    if args.is_empty() {
        Ok(parsed)
    } else {
        Err(ParseError::TooManyArguments(command))
    }
}

/// The command behind an inline button's `callback_data`: `sub:<project>`, `mute:<seconds>`, `mute`
/// (until `/unmute`) or `unmute`. Anything else (an old or forged button) is `None`.
pub fn parse_callback(data: &str) -> Option<BotCommand> {
    match data {
        "unmute" => return Some(BotCommand::Unmute),
        "mute" => return Some(BotCommand::Mute { duration: None }),
        _ => {}
    }
    let (kind, value) = data.split_once(':')?;
    match kind {
        "sub" if is_callback_project(value) => Some(BotCommand::Subscribe {
            project: value.to_owned(),
            branch: None,
            outcomes: Vec::new(),
        }),
        "mute" => {
            let duration = mute_from_seconds(value.parse().ok()?)?;
            Some(BotCommand::Mute {
                duration: Some(duration),
            })
        }
        _ => None,
    }
}

fn is_callback_project(project: &str) -> bool {
    !project.trim().is_empty()
        && project.trim() == project
        && !project.chars().any(char::is_control)
}

/// The compact `callback_data` for a button that runs `command`, if it has one: a subscription with neither
/// branch nor outcomes, a mute, an unmute. `None` as well when the data would exceed Telegram's
/// [`CALLBACK_DATA_LIMIT`] (a long project name), since Telegram would refuse the whole message.
pub fn callback_data(command: &BotCommand) -> Option<String> {
    let data = match command {
        BotCommand::Subscribe {
            project,
            branch: None,
            outcomes,
        } if outcomes.is_empty() && is_callback_project(project) => format!("sub:{project}"),
        BotCommand::Mute { duration: None } => "mute".to_owned(),
        BotCommand::Mute {
            duration: Some(duration),
        } => {
            let seconds = duration.num_seconds();
            mute_from_seconds(seconds).filter(|d| d == duration)?;
            format!("mute:{seconds}")
        }
        BotCommand::Unmute => "unmute".to_owned(),
        _ => return None,
    };
    (data.len() <= CALLBACK_DATA_LIMIT).then_some(data)
}

/// A duration as people read it and `/mute` accepts it back: `1h 30m`, `2d`, `1w 3d`. Seconds appear only
/// when there are some; zero is `0m`.
pub fn format_duration(d: Duration) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("w", 604_800),
        ("d", 86_400),
        ("h", 3_600),
        ("m", 60),
        ("s", 1),
    ];
    let total = d.num_seconds();
    let mut rest = total.unsigned_abs();
    let parts: Vec<String> = UNITS
        .iter()
        .filter_map(|&(suffix, unit)| {
            let amount = rest / unit;
            rest %= unit;
            (amount > 0).then(|| format!("{amount}{suffix}"))
        })
        .collect();
    if parts.is_empty() {
        return "0m".to_owned();
    }
    let sign = if total < 0 { "-" } else { "" };
    format!("{sign}{}", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use OutcomeFilter::*;

    const BOT: Option<&str> = Some("HeraldBot");

    fn ok(text: &str) -> BotCommand {
        parse(text, BOT).unwrap()
    }

    fn err(text: &str) -> ParseError {
        parse(text, BOT).unwrap_err()
    }

    fn subscribe(project: &str, branch: Option<&str>, outcomes: &[OutcomeFilter]) -> BotCommand {
        BotCommand::Subscribe {
            project: project.to_owned(),
            branch: branch.map(str::to_owned),
            outcomes: outcomes.to_vec(),
        }
    }

    fn muted(seconds: i64) -> BotCommand {
        BotCommand::Mute {
            duration: Some(Duration::seconds(seconds)),
        }
    }

    #[test]
    fn text_without_a_slash_is_not_a_command() {
        assert_eq!(err("hello"), ParseError::NotACommand);
        assert_eq!(err(""), ParseError::NotACommand);
        assert_eq!(err("  "), ParseError::NotACommand);
        assert_eq!(err("help /help"), ParseError::NotACommand);
    }

    #[test]
    fn commands_are_case_insensitive_and_tolerate_leading_space() {
        assert_eq!(ok("/HELP"), BotCommand::Help);
        assert_eq!(ok("  /List"), BotCommand::List);
        assert_eq!(ok("/UnMute"), BotCommand::Unmute);
    }

    #[test]
    fn unknown_commands_carry_their_lowercased_name() {
        assert_eq!(
            err("/Frobnicate x"),
            ParseError::Unknown("frobnicate".into())
        );
        assert_eq!(err("/"), ParseError::Unknown(String::new()));
        assert_eq!(err("/ help"), ParseError::Unknown(String::new()));
    }

    #[test]
    fn addressed_commands_are_accepted_for_this_bot_only() {
        assert_eq!(ok("/help@HeraldBot"), BotCommand::Help);
        assert_eq!(ok("/help@heraldbot"), BotCommand::Help);
        assert_eq!(
            parse("/status@HeraldBot api", Some("@heraldbot")),
            Ok(BotCommand::Status {
                project: "api".into()
            })
        );
        assert_eq!(err("/help@OtherBot"), ParseError::NotForThisBot);
        assert_eq!(err("/frobnicate@OtherBot"), ParseError::NotForThisBot);
        assert_eq!(parse("/help@OtherBot", None), Ok(BotCommand::Help));
        assert_eq!(
            parse("/nope@OtherBot", None),
            Err(ParseError::Unknown("nope".into()))
        );
    }

    #[test]
    fn start_takes_an_optional_link_code() {
        assert_eq!(ok("/start"), BotCommand::Start { code: None });
        assert_eq!(
            ok("/start Ab_9-z"),
            BotCommand::Start {
                code: Some("Ab_9-z".into())
            }
        );
        let longest = "x".repeat(64);
        assert_eq!(
            ok(&format!("/start {longest}")),
            BotCommand::Start {
                code: Some(longest)
            }
        );
        assert_eq!(
            err(&format!("/start {}", "x".repeat(65))),
            ParseError::BadLinkCode
        );
        assert_eq!(err("/start ab!cd"), ParseError::BadLinkCode);
        assert_eq!(err("/start äbc"), ParseError::BadLinkCode);
        assert_eq!(err("/start a b"), ParseError::TooManyArguments(START));
    }

    #[test]
    fn subscribe_needs_a_project() {
        assert_eq!(
            err("/subscribe"),
            ParseError::MissingArgument {
                command: SUBSCRIBE,
                argument: "project"
            }
        );
        assert_eq!(ok("/subscribe acme/api"), subscribe("acme/api", None, &[]));
    }

    #[test]
    fn subscribe_reads_a_branch_glob_and_outcomes() {
        assert_eq!(
            ok("/subscribe acme/api release/*"),
            subscribe("acme/api", Some("release/*"), &[])
        );
        assert_eq!(
            ok("/subscribe api main failed,fixed"),
            subscribe("api", Some("main"), &[Failed, Fixed])
        );
        assert_eq!(
            ok("/subscribe   api\tmain\n  Still-Failing"),
            subscribe("api", Some("main"), &[StillFailing])
        );
    }

    #[test]
    fn subscribe_takes_an_outcome_list_in_place_of_the_branch() {
        assert_eq!(
            ok("/subscribe api failed,fixed"),
            subscribe("api", None, &[Failed, Fixed])
        );
        assert_eq!(ok("/subscribe api all"), subscribe("api", None, &[All]));
        assert_eq!(
            ok("/subscribe api failed,failed,,started"),
            subscribe("api", None, &[Failed, Started])
        );
        // A branch that happens to look nothing like an outcome list stays a branch.
        assert_eq!(
            ok("/subscribe api feature/failed"),
            subscribe("api", Some("feature/failed"), &[])
        );
    }

    #[test]
    fn subscribe_reports_a_mistyped_outcome() {
        assert_eq!(
            err("/subscribe api failed,fixd"),
            ParseError::BadOutcome("fixd".into())
        );
        assert_eq!(
            err("/subscribe api main sometimes"),
            ParseError::BadOutcome("sometimes".into())
        );
        assert_eq!(
            err("/subscribe api main ,"),
            ParseError::BadOutcome(",".into())
        );
        assert_eq!(
            err("/subscribe api main failed extra"),
            ParseError::TooManyArguments(SUBSCRIBE)
        );
    }

    #[test]
    fn quoted_arguments_may_contain_spaces() {
        assert_eq!(
            ok("/subscribe \"My App\" main"),
            subscribe("My App", Some("main"), &[])
        );
        assert_eq!(
            ok("/status „Mein Projekt“"),
            BotCommand::Status {
                project: "Mein Projekt".into()
            }
        );
        assert_eq!(
            ok("/unsubscribe “My App”"),
            BotCommand::Unsubscribe {
                project: Some("My App".into())
            }
        );
        assert_eq!(
            ok("/status \"unclosed name"),
            BotCommand::Status {
                project: "unclosed name".into()
            }
        );
        assert_eq!(
            ok("/unsubscribe \"\""),
            BotCommand::Unsubscribe { project: None }
        );
    }

    #[test]
    fn unsubscribe_takes_an_optional_project() {
        assert_eq!(
            ok("/unsubscribe"),
            BotCommand::Unsubscribe { project: None }
        );
        assert_eq!(
            ok("/unsubscribe acme/api"),
            BotCommand::Unsubscribe {
                project: Some("acme/api".into())
            }
        );
        assert_eq!(
            err("/unsubscribe a b"),
            ParseError::TooManyArguments(UNSUBSCRIBE)
        );
    }

    #[test]
    fn status_needs_exactly_one_project() {
        assert_eq!(
            ok("/status acme/api"),
            BotCommand::Status {
                project: "acme/api".into()
            }
        );
        assert_eq!(
            err("/status"),
            ParseError::MissingArgument {
                command: STATUS,
                argument: "project"
            }
        );
        assert_eq!(err("/status a b"), ParseError::TooManyArguments(STATUS));
    }

    #[test]
    fn argumentless_commands_refuse_arguments_except_help() {
        assert_eq!(err("/list all"), ParseError::TooManyArguments(LIST));
        assert_eq!(err("/unmute api"), ParseError::TooManyArguments(UNMUTE));
        assert_eq!(ok("/help subscribe"), BotCommand::Help);
    }

    #[test]
    fn mute_reads_durations() {
        assert_eq!(ok("/mute"), BotCommand::Mute { duration: None });
        assert_eq!(ok("/mute 30m"), muted(30 * 60));
        assert_eq!(ok("/mute 2h"), muted(2 * 3_600));
        assert_eq!(ok("/mute 1d"), muted(86_400));
        assert_eq!(ok("/mute 1W"), muted(7 * 86_400));
        assert_eq!(ok("/mute 1h30m"), muted(5_400));
        assert_eq!(ok("/mute 1h 30m"), muted(5_400));
        assert_eq!(ok("/mute 45min"), muted(45 * 60));
        assert_eq!(ok("/mute 365d"), muted(365 * 86_400));
    }

    #[test]
    fn mute_refuses_bad_durations_with_what_was_typed() {
        for bad in [
            "30", "m", "2x", "-1h", "0m", "366d", "53w", "1h30", "1.5h", "h1", "soon",
        ] {
            assert_eq!(
                err(&format!("/mute {bad}")),
                ParseError::BadDuration(bad.into()),
                "{bad}"
            );
        }
        assert_eq!(err("/mute 1h x"), ParseError::BadDuration("1h x".into()));
        assert_eq!(
            err("/mute 99999999999999999999w"),
            ParseError::BadDuration("99999999999999999999w".into())
        );
        assert_eq!(
            err("/mute 9223372036854775807w"),
            ParseError::BadDuration("9223372036854775807w".into())
        );
    }

    #[test]
    fn durations_format_as_mute_reads_them() {
        assert_eq!(format_duration(Duration::minutes(90)), "1h 30m");
        assert_eq!(format_duration(Duration::days(2)), "2d");
        assert_eq!(format_duration(Duration::days(10)), "1w 3d");
        assert_eq!(format_duration(Duration::seconds(61)), "1m 1s");
        assert_eq!(format_duration(Duration::zero()), "0m");
        assert_eq!(format_duration(Duration::minutes(-5)), "-5m");
        for seconds in [60, 5_400, 86_400 + 60, 365 * 86_400, 12_345] {
            let d = Duration::seconds(seconds);
            assert_eq!(
                parse_duration(&format_duration(d).replace(' ', "")),
                Some(d)
            );
        }
    }

    #[test]
    fn callbacks_round_trip() {
        for command in [
            subscribe("acme/api", None, &[]),
            subscribe("My App: v2", None, &[]),
            muted(3_600),
            muted(365 * 86_400),
            BotCommand::Mute { duration: None },
            BotCommand::Unmute,
        ] {
            let data = callback_data(&command).unwrap();
            assert!(data.len() <= CALLBACK_DATA_LIMIT);
            assert_eq!(parse_callback(&data), Some(command), "{data}");
        }
        assert_eq!(callback_data(&muted(3_600)).as_deref(), Some("mute:3600"));
        assert_eq!(
            callback_data(&subscribe("api", None, &[])).as_deref(),
            Some("sub:api")
        );
    }

    #[test]
    fn callbacks_respect_telegrams_64_byte_limit() {
        let fits = "p".repeat(CALLBACK_DATA_LIMIT - "sub:".len());
        assert_eq!(
            callback_data(&subscribe(&fits, None, &[])).map(|d| d.len()),
            Some(CALLBACK_DATA_LIMIT)
        );
        let too_long = format!("{fits}p");
        assert_eq!(callback_data(&subscribe(&too_long, None, &[])), None);
        // Bytes, not characters: 31 two-byte characters plus `sub:` is 66 bytes.
        assert_eq!(callback_data(&subscribe(&"ä".repeat(31), None, &[])), None);
    }

    #[test]
    fn commands_without_a_compact_form_have_no_callback() {
        for command in [
            subscribe("api", Some("main"), &[]),
            subscribe("api", None, &[Failed]),
            subscribe(" api", None, &[]),
            BotCommand::Mute {
                duration: Some(Duration::zero()),
            },
            BotCommand::Mute {
                duration: Some(Duration::milliseconds(1_500)),
            },
            muted(366 * 86_400),
            BotCommand::Help,
            BotCommand::List,
            BotCommand::Start { code: None },
            BotCommand::Unsubscribe { project: None },
            BotCommand::Status {
                project: "api".into(),
            },
        ] {
            assert_eq!(callback_data(&command), None, "{command:?}");
        }
    }

    #[test]
    fn unknown_or_forged_callbacks_are_ignored() {
        for data in [
            "",
            "sub:",
            "sub: ",
            "sub:a\nb",
            "mute:",
            "mute:0",
            "mute:-60",
            "mute:abc",
            "mute:31622400",
            "unmute:1",
            "help",
            "subscribe:api",
        ] {
            assert_eq!(parse_callback(data), None, "{data:?}");
        }
    }

    #[test]
    fn every_command_knows_its_name() {
        let names: Vec<_> = [
            BotCommand::Start { code: None },
            subscribe("a", None, &[]),
            BotCommand::Unsubscribe { project: None },
            BotCommand::List,
            BotCommand::Mute { duration: None },
            BotCommand::Unmute,
            BotCommand::Status {
                project: "a".into(),
            },
            BotCommand::Help,
        ]
        .iter()
        .map(BotCommand::name)
        .collect();
        assert_eq!(names, COMMANDS);
    }
}
