//! What the fuzz targets check, on everything Herald reads from outside. Each function takes the raw bytes
//! libFuzzer makes up and panics only when Herald got something wrong: a panic inside Herald, an answer that
//! changes from one call to the next, a signature that stops matching, a message Telegram would refuse.
//!
//! Inputs are text with a first line that says what the rest is, so a corpus file reads like a request and the
//! seeds (from `tests/fixtures`, the built-in templates and Telegram's update shapes) are real ones:
//!
//! | target | input |
//! |---|---|
//! | `normalize` | `<provider> <event>` line, then the body |
//! | `authenticate` | `name: value` header lines, an empty line, then the body |
//! | `template` | a template id line (`build_finished.telegram.en`), then `## <part>` sections |
//! | `telegram_update` | a Telegram update as JSON, or a command text or button data |

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use commands::providers::{self, AuthError, Normalized, Provider, WebhookRequest};
use commands::template::{self, BuildContext, CompiledTemplate};
use domain::TemplateId;
use uuid::Uuid;
use workers::bot::command;
use workers::telegram::{split_message, MAX_MESSAGE_UNITS, MAX_PARTS};

/// The targets, as `scripts/fuzz.sh` runs them.
pub const TARGETS: [&str; 4] = ["normalize", "authenticate", "template", "telegram_update"];

/// The secret every `authenticate` input is checked against.
const SECRET: &str = "s3cret";

/// A fixed receive time: a target must answer the same for the same bytes.
fn received() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).expect("a valid time")
}

fn first_line(data: &[u8]) -> Option<(&str, &[u8])> {
    let end = data.iter().position(|b| *b == b'\n')?;
    Some((std::str::from_utf8(&data[..end]).ok()?, &data[end + 1..]))
}

/// Any body for any provider and event: an answer or an error, never a panic, and the same answer twice.
pub fn normalize(data: &[u8]) {
    let Some((line, body)) = first_line(data) else {
        return;
    };
    let Some((provider, event)) = line.split_once(' ') else {
        return;
    };
    let Ok(provider) = provider.parse::<Provider>() else {
        return;
    };
    let first = provider.normalize(Uuid::nil(), event, body, received());
    let again = provider.normalize(Uuid::nil(), event, body, received());
    match (&first, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the same body normalized differently"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("the same body was accepted once and refused once"),
    }
    if let Ok(Normalized::Build(event)) = first {
        // The ids a build is filed under come from the body: they must be derivable from anything accepted.
        let id = event.run.build_run_id();
        assert!(!id.is_empty(), "an accepted build has no id");
    }
}

/// Headers and a body: every provider authenticates, names and identifies it without panicking; a body
/// signed with the secret is accepted and the same signature on any other body is not.
pub fn authenticate(data: &[u8]) {
    let (headers, query_token, body) = split_request(data);
    let request = WebhookRequest {
        headers: &headers,
        body,
        query_token: query_token.as_deref(),
        received_at: received(),
    };
    for provider in Provider::ALL {
        let verdict = provider.authenticate(SECRET, &request);
        assert_eq!(verdict, provider.authenticate(SECRET, &request));
        let id = provider.delivery_id(&request);
        assert!(!id.trim().is_empty(), "{provider}: an empty delivery id");
        let _ = provider.event_name(&request);
    }

    let signature = providers::sign(SECRET, body);
    let mut signed = headers.clone();
    signed.insert("x-hub-signature-256".into(), signature);
    let signed_request = WebhookRequest {
        headers: &signed,
        ..request
    };
    assert_eq!(
        Provider::Github.authenticate(SECRET, &signed_request),
        Ok(()),
        "a correctly signed body was refused"
    );
    let mut other = body.to_vec();
    other.push(b' ');
    let tampered = WebhookRequest {
        body: &other,
        ..signed_request
    };
    assert_eq!(
        Provider::Github.authenticate(SECRET, &tampered),
        Err(AuthError::Mismatch),
        "a signature matched a body it was not made for"
    );
}

/// `name: value` lines up to an empty line (a `?token` line is the URL's token), then the body.
fn split_request(data: &[u8]) -> (BTreeMap<String, String>, Option<String>, &[u8]) {
    let mut headers = BTreeMap::new();
    let mut token = None;
    let mut rest = data;
    while let Some((line, after)) = first_line(rest) {
        rest = after;
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim_start().to_owned();
            match name {
                "?token" => token = Some(value),
                name => {
                    headers.insert(name.to_ascii_lowercase(), value);
                }
            }
        }
    }
    (headers, token, rest)
}

/// Any template source: refused with an error, or compiled into something that renders (or fails to render)
/// the same way every time, and whose Telegram text splits into messages Telegram takes.
pub fn template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((id, rest)) = text.split_once('\n') else {
        return;
    };
    let Ok(id) = TemplateId::parse(id.trim()) else {
        return;
    };
    let parts = template_parts(rest);
    let Ok(compiled) = CompiledTemplate::compile(id, &parts, "fuzz@1".into()) else {
        return;
    };
    let (run, verdict) = template::sample_run();
    for context in [
        BuildContext::sample(id.kind, id.language),
        BuildContext::new(&run, Some(&verdict), id.language),
        BuildContext::new(&run, None, id.language),
    ] {
        let first = compiled.render(&context);
        let again = compiled.render(&context);
        match (&first, &again) {
            (Ok(a), Ok(b)) => assert_eq!(a.text, b.text, "rendered differently twice"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("rendered once and failed once"),
        }
        if let Ok(rendered) = first {
            if id.channel == domain::TemplateChannel::Telegram {
                let messages = split_message(&rendered.text, MAX_MESSAGE_UNITS, MAX_PARTS);
                assert!(messages.len() <= MAX_PARTS);
                for message in messages {
                    assert!(
                        message.encode_utf16().count() <= MAX_MESSAGE_UNITS,
                        "a message longer than Telegram takes"
                    );
                }
            }
        }
    }
}

/// `## <part>` headings, each followed by that part's source.
fn template_parts(text: &str) -> BTreeMap<String, String> {
    let mut parts = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix("## ") {
            if let Some((name, source)) = current.take() {
                parts.insert(name, source);
            }
            current = Some((name.trim().to_owned(), String::new()));
        } else if let Some((_, source)) = current.as_mut() {
            source.push_str(line);
        }
    }
    if let Some((name, source)) = current {
        parts.insert(name, source);
    }
    parts
}

/// A Telegram update (JSON), or the text of a message or a button's data: read without a panic, and a
/// button the bot would draw for a command reads back as that command.
pub fn telegram_update(data: &[u8]) {
    if let Ok(update) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Some((incoming, _)) = workers::bot::handler::read_update(&update, Some("herald_bot"))
        {
            assert_ne!(incoming.chat_id(), 0, "an update from chat 0 was read");
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for username in [None, Some("herald_bot")] {
        if let Ok(parsed) = command::parse(text, username) {
            assert_eq!(command::parse(text, username), Ok(parsed));
        }
    }
    if let Some(parsed) = command::parse_callback(text) {
        if let Some(data) = command::callback_data(&parsed) {
            assert!(data.len() <= command::CALLBACK_DATA_LIMIT);
            assert_eq!(
                command::parse_callback(&data),
                Some(parsed),
                "a button's data did not read back"
            );
        }
    }
}

/// Run the check of `target` on `data`.
pub fn check(target: &str, data: &[u8]) {
    match target {
        "normalize" => normalize(data),
        "authenticate" => authenticate(data),
        "template" => template(data),
        "telegram_update" => telegram_update(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// The seed corpus of `target`, from the real fixtures in `fixtures` (the repository's `tests/fixtures`).
pub fn seeds(target: &str, fixtures: &Path) -> Vec<Vec<u8>> {
    match target {
        "normalize" => webhook_fixtures(fixtures)
            .into_iter()
            .map(|(provider, event, body)| {
                let mut seed = format!("{provider} {event}\n").into_bytes();
                seed.extend(body);
                seed
            })
            .collect(),
        "authenticate" => webhook_fixtures(fixtures)
            .into_iter()
            .map(|(provider, event, body)| {
                let signature = providers::sign(SECRET, &body);
                let hex = signature.trim_start_matches("sha256=");
                let headers = match provider {
                    Provider::Github => format!(
                        "X-GitHub-Event: {event}\nX-GitHub-Delivery: d-1\nX-Hub-Signature-256: {signature}\n"
                    ),
                    Provider::Gitlab => format!(
                        "X-Gitlab-Event: {event}\nX-Gitlab-Token: {SECRET}\nIdempotency-Key: k-1\n"
                    ),
                    Provider::Circleci => {
                        format!("circleci-event-type: {event}\ncircleci-signature: v1={hex}\n")
                    }
                    Provider::Jenkins => format!("?token: {SECRET}\n"),
                    Provider::Generic => format!(
                        "X-Herald-Timestamp: 1700000000\nX-Herald-Signature-256: {}\n",
                        providers::generic::sign_timestamped(SECRET, 1_700_000_000, &body)
                    ),
                };
                let mut seed = format!("{headers}\n").into_bytes();
                seed.extend(body);
                seed
            })
            .collect(),
        "template" => TemplateId::all()
            .into_iter()
            .map(|id| {
                let mut seed = format!("{id}\n");
                for (part, source) in template::builtin(id) {
                    seed.push_str(&format!("## {part}\n{source}\n"));
                }
                seed.into_bytes()
            })
            .collect(),
        "telegram_update" => TELEGRAM_SEEDS
            .iter()
            .map(|seed| seed.as_bytes().to_vec())
            .collect(),
        other => panic!("no fuzz target {other}"),
    }
}

/// Updates in the shapes the bot reads (Telegram Bot API, `Update`), and command texts and button data.
const TELEGRAM_SEEDS: &[&str] = &[
    r#"{"update_id":1,"message":{"message_id":5,"date":1700000000,"text":"/subscribe api main failed,fixed","from":{"id":9,"language_code":"de"},"chat":{"id":42,"type":"private"}}}"#,
    r#"{"update_id":2,"message":{"message_id":6,"date":1700000000,"text":"/mute@herald_bot 2h","from":{"id":9},"chat":{"id":-100123,"type":"supergroup"},"is_topic_message":true,"message_thread_id":77}}"#,
    r#"{"update_id":3,"callback_query":{"id":"q1","data":"mute:3600","from":{"id":9},"message":{"message_id":7,"date":1,"chat":{"id":42,"type":"private"}}}}"#,
    r#"{"update_id":4,"callback_query":{"id":"q2","data":"sub:api","from":{"id":9},"message":{"message_id":8,"date":1,"chat":{"id":-5,"type":"group"}}}}"#,
    r#"{"update_id":5,"edited_message":{"message_id":9,"date":1,"text":"/help","chat":{"id":42,"type":"private"}}}"#,
    "/start abc_DEF-123",
    "/unsubscribe api",
    "/status api",
    "/list",
    "mute:86400",
    "sub:acme/api",
];

/// (provider, event, body) for every payload in `tests/fixtures`, plus a generic report.
fn webhook_fixtures(root: &Path) -> Vec<(Provider, String, Vec<u8>)> {
    let mut all = Vec::new();
    for provider in [
        Provider::Github,
        Provider::Gitlab,
        Provider::Jenkins,
        Provider::Circleci,
    ] {
        let mut stack = vec![root.join(provider.as_str())];
        while let Some(path) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
                continue;
            }
            let Ok(body) = std::fs::read(&path) else {
                continue;
            };
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let event = match provider {
                Provider::Github => path
                    .parent()
                    .and_then(Path::file_name)
                    .map(|d| d.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                Provider::Gitlab if file.starts_with("job") => "Job Hook".to_owned(),
                Provider::Gitlab => "Pipeline Hook".to_owned(),
                Provider::Circleci => serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["type"].as_str().map(str::to_owned))
                    .unwrap_or_default(),
                _ => "build".to_owned(),
            };
            all.push((provider, event, body));
        }
    }
    all.push((
        Provider::Generic,
        "build".to_owned(),
        br#"{"repository":"acme/api","workflow":"deploy","run_id":7,"status":"failed","branch":"main","jobs":[]}"#
            .to_vec(),
    ));
    all.sort_by(|a, b| (a.0.as_str(), &a.1, &a.2).cmp(&(b.0.as_str(), &b.1, &b.2)));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
    }

    /// The smoke run of every target: each seed through its check. The fuzzer's long runs are in
    /// `scripts/fuzz.sh`; this keeps the targets compiling and their checks true on real inputs.
    #[test]
    fn every_seed_passes_its_target() {
        for target in TARGETS {
            let seeds = seeds(target, &fixtures());
            assert!(seeds.len() >= 10, "{target}: {} seeds", seeds.len());
            for seed in &seeds {
                check(target, seed);
            }
        }
    }

    #[test]
    fn the_seeds_are_understood_not_just_survived() {
        let builds = seeds("normalize", &fixtures())
            .iter()
            .filter(|seed| {
                let (line, body) = first_line(seed).unwrap();
                let (provider, event) = line.split_once(' ').unwrap();
                matches!(
                    provider.parse::<Provider>().unwrap().normalize(
                        Uuid::nil(),
                        event,
                        body,
                        received()
                    ),
                    Ok(Normalized::Build(_))
                )
            })
            .count();
        assert!(builds >= 30, "only {builds} fixtures normalized to builds");
        for seed in seeds("authenticate", &fixtures()) {
            let (headers, token, body) = split_request(&seed);
            let request = WebhookRequest {
                headers: &headers,
                body,
                query_token: token.as_deref(),
                received_at: received(),
            };
            let accepted = Provider::ALL
                .into_iter()
                .filter(|p| p.authenticate(SECRET, &request).is_ok())
                .count();
            assert!(accepted >= 1, "no provider accepts {headers:?}");
        }
        for seed in seeds("template", &fixtures()) {
            let text = String::from_utf8(seed).unwrap();
            let (id, rest) = text.split_once('\n').unwrap();
            let id = TemplateId::parse(id).unwrap();
            let compiled = CompiledTemplate::compile(id, &template_parts(rest), "t@1".into());
            assert!(compiled.is_ok(), "{id}: {compiled:?}");
        }
    }
}
