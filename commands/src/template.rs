//! Message texts, rendered with handlebars: the variables a template may use ([`BuildContext`]), the built-in
//! texts for every template id, the checks a template passes before it is saved, and compiled templates.
//!
//! Values are escaped for where the text goes: Telegram's HTML mode accepts only `&lt; &gt; &amp; &quot;` and
//! numeric entities, so Telegram texts escape exactly those; an email's HTML body is escaped as HTML; an email's
//! subject and plain text and a push message are not HTML at all and are left as they are. The template itself
//! may use the channel's markup (Telegram's tags, HTML in the email body).
//!
//! This module never reads the database: which version of a template is current is [`crate::templates`]'s job.

use std::collections::BTreeMap;

use domain::{
    Language, Outcome, RunInfo, TemplateChannel, TemplateId, TemplateKind, Transition, Verdict,
};
use handlebars::template::{BlockParam, HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{Handlebars, Path};
use serde::Serialize;

/// Telegram rejects texts longer than this (in UTF-16 code units; counting chars is a safe lower bound for
/// the texts Herald writes, which are mostly ASCII). The legacy [`MessageRenderer`] cuts here.
const TELEGRAM_MAX_CHARS: usize = 4096;

/// Where a rendered Telegram text is cut: delivery splits long texts into several messages, this only keeps a
/// runaway template (a huge commit message in a loop) from producing a flood.
pub const TELEGRAM_RENDER_MAX_CHARS: usize = 16_000;

/// The handlebars helpers a template may call: the built-in ones, minus `log` and `raw` (nothing to log to,
/// nothing to protect from rendering).
pub const HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or",
    "not", "len",
];

/// A variable a template may use, for the docs and for editors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Variable {
    pub name: &'static str,
    pub description: &'static str,
    /// Only in `build_finished` templates: a started run has no verdict yet.
    pub finished_only: bool,
}

const fn var(name: &'static str, description: &'static str, finished_only: bool) -> Variable {
    Variable {
        name,
        description,
        finished_only,
    }
}

/// Every variable of [`BuildContext`], documented (docs/templates.md says the same).
pub const VARIABLES: &[Variable] = &[
    var("emoji", "🔴 broken or failed, ✅ fixed, 🟢 passed, 🔄 started, ⚪ cancelled or skipped, 🟡 action required", false),
    var("headline", "what happened, in the template's language: \"is broken\", \"is still failing (3 in a row)\", \"started\" ...", false),
    var("outcome", "succeeded, failed, cancelled, skipped, timed_out or action_required", true),
    var("transition", "broken, fixed, still_failing, passing or unchanged, against the previous run of the workflow on the branch", true),
    var("repository", "owner/name as the CI provider spells it", false),
    var("workflow", "the workflow or pipeline name", false),
    var("branch", "the branch (or tag) the run built; \"(none)\" when the provider named neither", false),
    var("commit", "the commit, shortened to 7 characters; empty when unknown", false),
    var("commit_message", "the first line of the commit message, at most 200 characters; empty when unknown", false),
    var("author", "who pushed or triggered the run; empty when unknown", false),
    var("duration", "how long the run took, e.g. \"4m 12s\"; empty when unknown", true),
    var("failed_jobs", "the failed jobs, comma-separated; empty when none", true),
    var("url", "the run's page at the provider; empty when unknown", false),
    var("run_number", "the provider's run number; empty when it has none", false),
    var("failure_streak", "failed runs in a row ending with this one (0 when it did not fail)", true),
    var("project_id", "the Herald project's id", false),
    var("build_run_id", "Herald's id of this run attempt", false),
];

/// The variables a template of `kind` may use.
pub fn variables(kind: TemplateKind) -> impl Iterator<Item = &'static Variable> {
    VARIABLES
        .iter()
        .filter(move |v| kind == TemplateKind::BuildFinished || !v.finished_only)
}

/// What a template is rendered with: one run, and its verdict when it finished. Absent values are `null`, so
/// `{{#if commit}}` leaves a line out and `{{commit}}` prints nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildContext {
    pub emoji: &'static str,
    pub headline: String,
    pub outcome: Option<&'static str>,
    pub transition: Option<&'static str>,
    pub repository: String,
    pub workflow: String,
    pub branch: String,
    pub commit: Option<String>,
    pub commit_message: Option<String>,
    pub author: Option<String>,
    pub duration: Option<String>,
    pub failed_jobs: Option<String>,
    pub url: Option<String>,
    pub run_number: Option<i64>,
    pub failure_streak: u32,
    pub project_id: String,
    pub build_run_id: String,
}

impl BuildContext {
    /// The context of a run: `verdict` `None` means it started. The headline is worded in `language`.
    pub fn new(run: &RunInfo, verdict: Option<&Verdict>, language: Language) -> Self {
        let (emoji, headline) = headline(verdict, language);
        let none = match language {
            Language::En => "(none)",
            Language::De => "(keiner)",
        };
        Self {
            emoji,
            headline,
            outcome: verdict.map(|v| v.outcome.as_str()),
            transition: verdict.map(|v| v.transition.as_str()),
            repository: run.repository.clone(),
            workflow: run.workflow.clone(),
            branch: run
                .branch
                .clone()
                .or_else(|| run.tag.clone())
                .unwrap_or_else(|| none.to_owned()),
            commit: run
                .commit_sha
                .as_deref()
                .map(|s| s.chars().take(7).collect()),
            commit_message: run.commit_message.as_deref().and_then(|m| {
                let first_line = m.lines().next()?.trim();
                let short: String = first_line.chars().take(200).collect();
                (!short.is_empty()).then_some(short)
            }),
            author: run.author.clone(),
            duration: verdict.and_then(|v| v.duration_secs).map(human_duration),
            failed_jobs: verdict
                .filter(|v| !v.failed_jobs.is_empty())
                .map(|v| v.failed_jobs.join(", ")),
            url: run.url.clone(),
            run_number: run.run_number,
            failure_streak: verdict.map_or(0, |v| v.failure_streak),
            project_id: run.project_id.to_string(),
            build_run_id: run.build_run_id(),
        }
    }

    /// A realistic failing GitHub Actions run (or, for `build_started`, the same run starting), for previews.
    /// Its commit message has `<`, `&` and quotes in it, so a preview shows how values are escaped.
    pub fn sample(kind: TemplateKind, language: Language) -> Self {
        let (run, verdict) = sample_run();
        match kind {
            TemplateKind::BuildFinished => Self::new(&run, Some(&verdict), language),
            TemplateKind::BuildStarted => Self::new(&run, None, language),
        }
    }
}

/// The sample run behind [`BuildContext::sample`].
pub fn sample_run() -> (RunInfo, Verdict) {
    let completed_at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
    let run = RunInfo {
        project_id: uuid::Uuid::from_u128(0x5a3c_0e1e_4d2b_4c6a_9f1e_0b7d_2c4e_8a10),
        provider: "github".into(),
        repository: "octo-org/checkout-service".into(),
        workflow: "CI".into(),
        branch: Some("main".into()),
        tag: None,
        pull_request: None,
        run_id: 9_876_543_210,
        run_key: None,
        run_number: Some(1482),
        attempt: 1,
        commit_sha: Some("3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39".into()),
        commit_message: Some(
            "Handle <empty> carts & \"guest\" checkouts\n\nThe body of the message is not shown."
                .into(),
        ),
        author: Some("ana-dev".into()),
        url: Some("https://github.com/octo-org/checkout-service/actions/runs/9876543210".into()),
    };
    let verdict = Verdict {
        outcome: Outcome::Failed,
        transition: Transition::Broken,
        previous_outcome: Some(Outcome::Succeeded),
        failure_streak: 1,
        started_at: Some(completed_at - chrono::Duration::seconds(252)),
        completed_at,
        duration_secs: Some(252),
        failed_jobs: vec!["test (ubuntu-latest)".into(), "lint".into()],
    };
    (run, verdict)
}

fn headline(verdict: Option<&Verdict>, language: Language) -> (&'static str, String) {
    let Some(v) = verdict else {
        return (
            "🔄",
            match language {
                Language::En => "started",
                Language::De => "wurde gestartet",
            }
            .to_owned(),
        );
    };
    let en = language == Language::En;
    let pick = |en_text: &str, de_text: &str| if en { en_text } else { de_text }.to_owned();
    match (v.outcome, v.transition) {
        (_, Transition::Broken) => ("🔴", pick("is broken", "ist kaputt")),
        (_, Transition::StillFailing) => (
            "🔴",
            if en {
                format!("is still failing ({} in a row)", v.failure_streak)
            } else {
                format!("schlägt weiter fehl ({}× in Folge)", v.failure_streak)
            },
        ),
        (_, Transition::Fixed) => ("✅", pick("is fixed", "ist repariert")),
        (Outcome::Succeeded, _) => ("🟢", pick("passed", "war erfolgreich")),
        (Outcome::Cancelled, _) => ("⚪", pick("was cancelled", "wurde abgebrochen")),
        (Outcome::Skipped, _) => ("⚪", pick("was skipped", "wurde übersprungen")),
        (Outcome::ActionRequired, _) => ("🟡", pick("needs an action", "wartet auf eine Aktion")),
        (Outcome::Failed, _) => ("🔴", pick("failed", "ist fehlgeschlagen")),
        (Outcome::TimedOut, _) => ("🔴", pick("timed out", "hat das Zeitlimit überschritten")),
    }
}

fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Built-in texts

/// The version of a built-in text, as notifications record it (`builtin/{id}@{n}`). Bump it when that
/// built-in's text changes, so the audit trail tells old and new messages apart.
pub fn builtin_version(id: TemplateId) -> u32 {
    let _ = id;
    1
}

/// How notifications name a built-in text: `builtin/build_finished.telegram.en@1`.
pub fn builtin_reference(id: TemplateId) -> String {
    format!("builtin/{id}@{}", builtin_version(id))
}

/// Words of the built-in texts, per language.
struct Labels {
    outcome: &'static str,
    branch: &'static str,
    commit: &'static str,
    by: &'static str,
    took: &'static str,
    failed_jobs: &'static str,
    open_run: &'static str,
    on: &'static str,
    footer: &'static str,
}

fn labels(language: Language) -> Labels {
    match language {
        Language::En => Labels {
            outcome: "Outcome",
            branch: "Branch",
            commit: "Commit",
            by: "By",
            took: "Took",
            failed_jobs: "Failed jobs",
            open_run: "Open run",
            on: "on",
            footer: "Sent by Herald because you subscribed to this project.",
        },
        Language::De => Labels {
            outcome: "Ergebnis",
            branch: "Branch",
            commit: "Commit",
            by: "Von",
            took: "Dauer",
            failed_jobs: "Fehlgeschlagene Jobs",
            open_run: "Lauf öffnen",
            on: "auf",
            footer: "Von Herald gesendet, weil Sie dieses Projekt abonniert haben.",
        },
    }
}

/// The English Telegram verdict text, the one Herald always had.
const TELEGRAM_BUILD: &str = "\
{{emoji}} <b>{{repository}}</b>: {{workflow}} {{headline}}
Outcome: <b>{{outcome}}</b>
Branch: <code>{{branch}}</code>
{{#if commit}}Commit: <code>{{commit}}</code>{{#if commit_message}} {{commit_message}}{{/if}}
{{/if}}{{#if author}}By: {{author}}
{{/if}}{{#if duration}}Took: {{duration}}
{{/if}}{{#if failed_jobs}}Failed jobs: {{failed_jobs}}
{{/if}}{{#if url}}<a href=\"{{url}}\">Open run{{#if run_number}} #{{run_number}}{{/if}}</a>{{/if}}";

/// The built-in parts of a template: what it renders while nobody saved a version, and after a reset.
pub fn builtin(id: TemplateId) -> BTreeMap<String, String> {
    let l = labels(id.language);
    let finished = id.kind == TemplateKind::BuildFinished;
    let run_link =
        |label: &str| format!("{label}{{{{#if run_number}}}} #{{{{run_number}}}}{{{{/if}}}}");
    let open_run = if id.language == Language::De {
        "Lauf{{#if run_number}} #{{run_number}}{{/if}} öffnen".to_owned()
    } else {
        run_link(l.open_run)
    };
    let title = "{{emoji}} {{repository}}: {{workflow}} {{headline}}";
    let commit_line = |pre: &str, post: &str| {
        format!("{{{{#if commit}}}}{}: {pre}{{{{commit}}}}{post}{{{{#if commit_message}}}} {{{{commit_message}}}}{{{{/if}}}}\n{{{{/if}}}}", l.commit)
    };
    // Lines only a verdict has.
    let verdict_lines = |bold: (&str, &str)| {
        if !finished {
            return String::new();
        }
        format!(
            "{{{{#if duration}}}}{}: {{{{duration}}}}\n{{{{/if}}}}{{{{#if failed_jobs}}}}{}: {}{{{{failed_jobs}}}}{}\n{{{{/if}}}}",
            l.took, l.failed_jobs, bold.0, bold.1
        )
    };
    let parts: Vec<(&str, String)> = match id.channel {
        TemplateChannel::Telegram if finished && id.language == Language::En => {
            vec![("text", TELEGRAM_BUILD.to_owned())]
        }
        TemplateChannel::Telegram => {
            let outcome = if finished {
                format!("{}: <b>{{{{outcome}}}}</b>\n", l.outcome)
            } else {
                String::new()
            };
            vec![(
                "text",
                format!(
                    "{{{{emoji}}}} <b>{{{{repository}}}}</b>: {{{{workflow}}}} {{{{headline}}}}\n{outcome}{}: <code>{{{{branch}}}}</code>\n{}{{{{#if author}}}}{}: {{{{author}}}}\n{{{{/if}}}}{}{{{{#if url}}}}<a href=\"{{{{url}}}}\">{open_run}</a>{{{{/if}}}}",
                    l.branch,
                    commit_line("<code>", "</code>"),
                    l.by,
                    verdict_lines(("", "")),
                ),
            )]
        }
        TemplateChannel::Email => {
            let outcome = if finished {
                format!("{}: {{{{outcome}}}}\n", l.outcome)
            } else {
                String::new()
            };
            let text = format!(
                "{{{{emoji}}}} {{{{repository}}}}: {{{{workflow}}}} {{{{headline}}}}\n\n{outcome}{}: {{{{branch}}}}\n{}{{{{#if author}}}}{}: {{{{author}}}}\n{{{{/if}}}}{}{{{{#if url}}}}\n{open_run}: {{{{url}}}}\n{{{{/if}}}}\n-- \n{}\n",
                l.branch,
                commit_line("", ""),
                l.by,
                verdict_lines(("", "")),
                l.footer,
            );
            vec![
                ("subject", format!("{title} {} {{{{branch}}}}", l.on)),
                ("text", text),
                ("html", email_html(&l, finished, &open_run, id.language)),
            ]
        }
        TemplateChannel::Push => {
            let mut body = "{{branch}}{{#if commit}} · {{commit}}{{/if}}{{#if commit_message}}: {{commit_message}}{{/if}}".to_owned();
            if finished {
                body.push_str(&format!(
                    "{{{{#if failed_jobs}}}}\n{}: {{{{failed_jobs}}}}{{{{/if}}}}{{{{#if duration}}}}\n{}: {{{{duration}}}}{{{{/if}}}}",
                    l.failed_jobs, l.took
                ));
            }
            vec![("title", title.to_owned()), ("body", body)]
        }
    };
    parts
        .into_iter()
        .map(|(part, text)| (part.to_owned(), text))
        .collect()
}

/// A small, clean HTML mail: one card, a table of facts, one button. Inline styles only, because mail clients
/// drop `<style>` blocks.
fn email_html(l: &Labels, finished: bool, open_run: &str, language: Language) -> String {
    let row = |label: &str, value: &str| {
        format!("<tr><td style=\"padding:2px 16px 2px 0;color:#57606a;vertical-align:top;\">{label}</td><td style=\"padding:2px 0;\">{value}</td></tr>\n")
    };
    let mut rows = String::new();
    if finished {
        rows.push_str(&row(l.outcome, "<strong>{{outcome}}</strong>"));
    }
    rows.push_str(&row(l.branch, "<code>{{branch}}</code>"));
    rows.push_str(&format!(
        "{{{{#if commit}}}}{}{{{{/if}}}}",
        row(
            l.commit,
            "<code>{{commit}}</code>{{#if commit_message}} {{commit_message}}{{/if}}"
        )
    ));
    rows.push_str(&format!(
        "{{{{#if author}}}}{}{{{{/if}}}}",
        row(l.by, "{{author}}")
    ));
    if finished {
        rows.push_str(&format!(
            "{{{{#if duration}}}}{}{{{{/if}}}}",
            row(l.took, "{{duration}}")
        ));
        rows.push_str(&format!(
            "{{{{#if failed_jobs}}}}{}{{{{/if}}}}",
            row(l.failed_jobs, "{{failed_jobs}}")
        ));
    }
    format!(
        "<!DOCTYPE html>
<html lang=\"{lang}\">
<body style=\"margin:0;padding:24px;background:#f6f8fa;font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#24292f;\">
<table role=\"presentation\" width=\"100%\" style=\"max-width:560px;margin:0 auto;background:#ffffff;border:1px solid #d0d7de;border-radius:6px;\">
<tr><td style=\"padding:20px 24px;\">
<p style=\"margin:0 0 12px;font-size:18px;font-weight:600;\">{{{{emoji}}}} {{{{repository}}}}: {{{{workflow}}}} {{{{headline}}}}</p>
<table role=\"presentation\" style=\"font-size:14px;line-height:1.5;border-collapse:collapse;\">
{rows}</table>
{{{{#if url}}}}<p style=\"margin:20px 0 0;\"><a href=\"{{{{url}}}}\" style=\"display:inline-block;padding:8px 16px;background:#0969da;color:#ffffff;text-decoration:none;border-radius:6px;font-weight:600;\">{open_run}</a></p>{{{{/if}}}}
</td></tr>
</table>
<p style=\"max-width:560px;margin:12px auto 0;font-size:12px;color:#57606a;\">{footer}</p>
</body>
</html>
",
        lang = language.as_str(),
        footer = l.footer,
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Errors

/// What kind of problem a template has, for programs (an editor highlighting the spot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateErrorKind {
    /// Not valid handlebars.
    Syntax,
    /// A variable that is not in the kind's variable set.
    UnknownVariable,
    /// A helper other than handlebars' built-in ones.
    UnknownHelper,
    /// Missing or extra parts for the channel, or a part too long.
    Parts,
    /// Partials, decorators, or `{{{triple braces}}}` where values must be escaped.
    NotAllowed,
    /// Rendering failed (strict mode found a value missing).
    Render,
    /// The current version could not be read; worth retrying.
    Unavailable,
}

/// A template that does not compile or render, with where it goes wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template error{}{}: {message}",
    part.as_ref().map(|p| format!(" in part {p}")).unwrap_or_default(),
    line.map(|l| format!(" on line {l}")).unwrap_or_default())]
pub struct TemplateError {
    pub kind: TemplateErrorKind,
    /// The part (`text`, `subject`, ...) at fault.
    pub part: Option<String>,
    /// 1-based line in that part.
    pub line: Option<usize>,
    /// The unknown variable or helper.
    pub variable: Option<String>,
    pub message: String,
}

impl TemplateError {
    fn new(kind: TemplateErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            part: None,
            line: None,
            variable: None,
            message: message.into(),
        }
    }

    fn in_part(mut self, part: &str) -> Self {
        self.part = Some(part.to_owned());
        self
    }

    fn at(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }

    /// The read model could not be read: the render may succeed on a retry.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(TemplateErrorKind::Unavailable, message)
    }

    pub fn is_transient(&self) -> bool {
        self.kind == TemplateErrorKind::Unavailable
    }

    fn syntax(e: &handlebars::TemplateError) -> Self {
        Self::new(TemplateErrorKind::Syntax, e.reason().to_string())
            .at(e.pos().map(|(line, _)| line))
    }
}

impl From<domain::PartsError> for TemplateError {
    fn from(e: domain::PartsError) -> Self {
        let part = e.part().to_owned();
        Self::new(TemplateErrorKind::Parts, e.to_string()).in_part(&part)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Checking a template before it is saved

/// How a part's values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    TelegramHtml,
    Html,
    /// Plain text (email subject and text, push): nothing is HTML, nothing is escaped.
    None,
}

fn escape_of(channel: TemplateChannel, part: &str) -> Escape {
    match (channel, part) {
        (TemplateChannel::Telegram, _) => Escape::TelegramHtml,
        (TemplateChannel::Email, "html") => Escape::Html,
        _ => Escape::None,
    }
}

/// Check a template's parts: the channel's parts and no others, each valid handlebars, every variable in the
/// kind's set, only built-in helpers. The first problem found is returned, with its part and line.
pub fn validate(id: TemplateId, parts: &BTreeMap<String, String>) -> Result<(), TemplateError> {
    domain::check_parts(id.channel, parts)?;
    for (name, source) in parts {
        let template =
            Template::compile(source).map_err(|e| TemplateError::syntax(&e).in_part(name))?;
        let checker = Checker {
            kind: id.kind,
            escaped: escape_of(id.channel, name) != Escape::None,
        };
        checker
            .walk(&template, &mut vec![Scope::root()])
            .map_err(|e| e.in_part(name))?;
    }
    Ok(())
}

/// What `this` is at a point of a template.
struct Scope {
    /// Inside `#each` or `#with`: `this` is an item, not the context.
    item: bool,
    /// Inside `#each`: `@index`, `@key`, `@first`, `@last` exist.
    each: bool,
    /// Block parameters (`as |job|`).
    params: Vec<String>,
}

impl Scope {
    fn root() -> Self {
        Self {
            item: false,
            each: false,
            params: Vec::new(),
        }
    }
}

struct Checker {
    kind: TemplateKind,
    /// Values in this part are escaped: `{{{triple braces}}}` would let a commit message inject markup.
    escaped: bool,
}

impl Checker {
    fn walk(&self, template: &Template, scopes: &mut Vec<Scope>) -> Result<(), TemplateError> {
        for (i, element) in template.elements.iter().enumerate() {
            let line = template.mapping.get(i).map(|m| m.0);
            self.element(element, scopes).map_err(|e| match e.line {
                Some(_) => e,
                None => e.at(line),
            })?;
        }
        Ok(())
    }

    fn element(
        &self,
        element: &TemplateElement,
        scopes: &mut Vec<Scope>,
    ) -> Result<(), TemplateError> {
        match element {
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => Ok(()),
            TemplateElement::Expression(helper) => self.call(helper, scopes),
            TemplateElement::HtmlExpression(helper) => {
                if self.escaped {
                    return Err(TemplateError::new(
                        TemplateErrorKind::NotAllowed,
                        "{{{triple braces}}} would output a value unescaped; use {{double braces}}",
                    ));
                }
                self.call(helper, scopes)
            }
            TemplateElement::HelperBlock(helper) => self.block(helper, scopes),
            _ => Err(TemplateError::new(
                TemplateErrorKind::NotAllowed,
                "partials and decorators are not available in notification templates",
            )),
        }
    }

    fn helper_name<'a>(&self, helper: &'a HelperTemplate) -> Result<&'a str, TemplateError> {
        let name = match &helper.name {
            Parameter::Name(name) => name.as_str(),
            Parameter::Path(path) => path_raw(path),
            _ => "(subexpression)",
        };
        if HELPERS.contains(&name) {
            Ok(name)
        } else {
            let mut error = TemplateError::new(
                TemplateErrorKind::UnknownHelper,
                format!("unknown helper `{name}`; available: {}", HELPERS.join(", ")),
            );
            error.variable = Some(name.to_owned());
            Err(error)
        }
    }

    fn block(&self, helper: &HelperTemplate, scopes: &mut Vec<Scope>) -> Result<(), TemplateError> {
        let name = self.helper_name(helper)?;
        self.arguments(helper, scopes)?;
        if let Some(body) = &helper.template {
            if matches!(name, "each" | "with") {
                let params = match &helper.block_param {
                    Some(BlockParam::Single(p)) => vec![param_name(p)],
                    Some(BlockParam::Pair((a, b))) => vec![param_name(a), param_name(b)],
                    _ => Vec::new(),
                };
                scopes.push(Scope {
                    item: true,
                    each: name == "each",
                    params,
                });
                let result = self.walk(body, scopes);
                scopes.pop();
                result?;
            } else {
                self.walk(body, scopes)?;
            }
        }
        if let Some(inverse) = &helper.inverse {
            self.walk(inverse, scopes)?;
        }
        Ok(())
    }

    /// `{{name}}` looks a value up; `{{helper arg ...}}` calls a helper.
    fn call(&self, helper: &HelperTemplate, scopes: &[Scope]) -> Result<(), TemplateError> {
        if helper.params.is_empty() && helper.hash.is_empty() {
            return self.parameter(&helper.name, scopes);
        }
        self.helper_name(helper)?;
        self.arguments(helper, scopes)
    }

    fn arguments(&self, helper: &HelperTemplate, scopes: &[Scope]) -> Result<(), TemplateError> {
        for param in helper.params.iter().chain(helper.hash.values()) {
            self.parameter(param, scopes)?;
        }
        Ok(())
    }

    fn parameter(&self, param: &Parameter, scopes: &[Scope]) -> Result<(), TemplateError> {
        match param {
            Parameter::Name(name) => self.path(name, scopes),
            Parameter::Path(path) => self.path(path_raw(path), scopes),
            Parameter::Subexpression(sub) => match sub.as_element() {
                TemplateElement::Expression(helper) => {
                    self.helper_name(helper)?;
                    self.arguments(helper, scopes)
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Is `raw` (`repository`, `this`, `../branch`, `@index`, `@root.url`) a variable here?
    fn path(&self, raw: &str, scopes: &[Scope]) -> Result<(), TemplateError> {
        let unknown = |hint: &str| {
            let mut error = TemplateError::new(
                TemplateErrorKind::UnknownVariable,
                format!(
                    "unknown variable `{raw}`{hint}; a {} template has: {}",
                    self.kind.as_str(),
                    variables(self.kind)
                        .map(|v| v.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            error.variable = Some(raw.to_owned());
            error
        };
        if let Some(rest) = raw.strip_prefix("@root") {
            let rest = rest.trim_start_matches(['.', '/']);
            return self.root_variable(rest).ok_or_else(|| unknown(""));
        }
        let mut rest = raw;
        let mut up = 0;
        while let Some(r) = rest.strip_prefix("../") {
            up += 1;
            rest = r;
        }
        let Some(scope) = scopes.len().checked_sub(up + 1).map(|i| &scopes[i]) else {
            return Err(unknown(" (`../` goes above the template)"));
        };
        if let Some(local) = rest.strip_prefix('@') {
            return if scope.each && matches!(local, "index" | "key" | "first" | "last") {
                Ok(())
            } else {
                Err(unknown(
                    " (@index, @key, @first and @last exist only inside #each)",
                ))
            };
        }
        let this_itself = rest == "this" || rest == ".";
        let relative = ["this.", "this/", "./"]
            .iter()
            .find_map(|p| rest.strip_prefix(p));
        if scope.item {
            if this_itself || relative.is_some() {
                return Ok(());
            }
            let first = first_segment(rest);
            if scopes[..scopes.len() - up]
                .iter()
                .any(|s| s.params.iter().any(|p| p == first))
            {
                return Ok(());
            }
            return Err(unknown(
                " (inside #each or #with, use this, @index, a block parameter or ../name)",
            ));
        }
        if this_itself {
            return Err(unknown(""));
        }
        self.root_variable(relative.unwrap_or(rest))
            .ok_or_else(|| unknown(""))
    }

    /// Every variable is a single value: `repository` is one, `repository.name` is not.
    fn root_variable(&self, path: &str) -> Option<()> {
        let name = path.trim_start_matches('[').trim_end_matches(']');
        variables(self.kind).any(|v| v.name == name).then_some(())
    }
}

fn path_raw(path: &Path) -> &str {
    match path {
        Path::Relative((_, raw)) => raw,
        Path::Local((_, _, raw)) => raw,
    }
}

fn param_name(param: &Parameter) -> String {
    match param {
        Parameter::Name(name) => name.clone(),
        Parameter::Path(path) => path_raw(path).to_owned(),
        _ => String::new(),
    }
}

fn first_segment(path: &str) -> &str {
    path.split(['.', '/']).next().unwrap_or(path)
}

// ---------------------------------------------------------------------------------------------------------------
// Compiled templates

/// A message rendered for one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Rendered {
    /// Which text it was rendered from: `builtin/{id}@{n}` or `{id}@{version}`; notifications record it.
    pub template: String,
    /// The email subject, or the push title.
    pub subject: Option<String>,
    /// The Telegram text (HTML), the email's plain text, or the push body.
    pub text: String,
    /// The email's HTML body.
    pub html: Option<String>,
}

/// One part, compiled into a registry of its own because each part escapes its own way.
struct CompiledPart {
    name: String,
    registry: Handlebars<'static>,
}

/// A validated template, compiled once and rendered many times.
pub struct CompiledTemplate {
    id: TemplateId,
    reference: String,
    parts: Vec<CompiledPart>,
}

impl std::fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledTemplate")
            .field("id", &self.id.to_string())
            .field("reference", &self.reference)
            .finish_non_exhaustive()
    }
}

impl CompiledTemplate {
    /// Validate and compile `parts` for `id`; `reference` is what notifications will record.
    pub fn compile(
        id: TemplateId,
        parts: &BTreeMap<String, String>,
        reference: String,
    ) -> Result<Self, TemplateError> {
        validate(id, parts)?;
        let mut compiled = Vec::with_capacity(parts.len());
        for (name, source) in parts {
            let mut registry = Handlebars::new();
            registry.set_strict_mode(true);
            match escape_of(id.channel, name) {
                Escape::TelegramHtml => registry.register_escape_fn(escape_telegram_html),
                Escape::Html => registry.register_escape_fn(escape_html),
                Escape::None => registry.register_escape_fn(handlebars::no_escape),
            }
            registry
                .register_template_string(name, source)
                .map_err(|e| TemplateError::syntax(&e).in_part(name))?;
            compiled.push(CompiledPart {
                name: name.clone(),
                registry,
            });
        }
        Ok(Self {
            id,
            reference,
            parts: compiled,
        })
    }

    /// The built-in text of `id`, compiled.
    pub fn builtin(id: TemplateId) -> Result<Self, TemplateError> {
        Self::compile(id, &builtin(id), builtin_reference(id))
    }

    pub fn reference(&self) -> &str {
        &self.reference
    }

    fn part(&self, name: &str, context: &BuildContext) -> Result<Option<String>, TemplateError> {
        let Some(part) = self.parts.iter().find(|p| p.name == name) else {
            return Ok(None);
        };
        part.registry.render(name, context).map(Some).map_err(|e| {
            TemplateError::new(TemplateErrorKind::Render, e.to_string())
                .in_part(name)
                .at(e.line_no)
        })
    }

    pub fn render(&self, context: &BuildContext) -> Result<Rendered, TemplateError> {
        let required = |name: &str, value: Option<String>| {
            value.ok_or_else(|| {
                TemplateError::new(
                    TemplateErrorKind::Parts,
                    format!("part {name:?} is missing"),
                )
                .in_part(name)
            })
        };
        let (subject, text, html) = match self.id.channel {
            TemplateChannel::Telegram => (
                None,
                truncate(
                    required("text", self.part("text", context)?)?,
                    TELEGRAM_RENDER_MAX_CHARS,
                ),
                None,
            ),
            TemplateChannel::Email => (
                Some(one_line(&required(
                    "subject",
                    self.part("subject", context)?,
                )?)),
                required("text", self.part("text", context)?)?,
                Some(required("html", self.part("html", context)?)?),
            ),
            TemplateChannel::Push => (
                Some(one_line(&required("title", self.part("title", context)?)?)),
                required("body", self.part("body", context)?)?,
                None,
            ),
        };
        Ok(Rendered {
            template: self.reference.clone(),
            subject,
            text,
            html,
        })
    }
}

/// A subject or title is one line: a commit message with a line break must not break the mail header.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn escape_telegram_html(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// HTML escaping for the email body: handlebars' own also escapes `=` and backticks, which turns every URL in
/// an `href` into entity soup without making it any safer inside a quoted attribute.
pub fn escape_html(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// The renderer the planner, the digester and dry runs used before templates were stored

/// The built-in English Telegram texts, without the database: what dry runs and digests use, and what the
/// planner used before [`crate::templates::Templates`].
pub struct MessageRenderer {
    registry: Handlebars<'static>,
    started: CompiledTemplate,
}

impl Default for MessageRenderer {
    fn default() -> Self {
        Self::new()
    }
}

impl MessageRenderer {
    /// The built-in Telegram build template, as notifications recorded it before templates were stored.
    pub const TELEGRAM_BUILD: &'static str = "builtin/telegram_build@1";

    pub fn new() -> Self {
        Self::with_telegram_template(TELEGRAM_BUILD).expect("the built-in template is valid")
    }

    /// A renderer with a proposed Telegram verdict template instead of the built-in one. Only its syntax is
    /// checked here; an unknown variable fails when rendering (dry runs count those per verdict).
    pub fn with_telegram_template(template: &str) -> Result<Self, TemplateError> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(escape_telegram_html);
        registry
            .register_template_string("telegram_build", template)
            .map_err(|e| TemplateError::syntax(&e))?;
        let started = CompiledTemplate::builtin(TemplateId::new(
            TemplateKind::BuildStarted,
            TemplateChannel::Telegram,
            Language::En,
        ))?;
        Ok(Self { registry, started })
    }

    /// The Telegram HTML text announcing a build verdict.
    pub fn telegram_build(
        &self,
        run: &RunInfo,
        verdict: &Verdict,
    ) -> Result<String, handlebars::RenderError> {
        let context = BuildContext::new(run, Some(verdict), Language::En);
        let text = self.registry.render("telegram_build", &context)?;
        Ok(truncate(text, TELEGRAM_MAX_CHARS))
    }
}

impl MessageRenderer {
    /// The built-in "a run started" text, as notifications recorded it.
    pub const TELEGRAM_STARTED: &'static str = "builtin/telegram_started@1";
    /// The built-in digest text.
    pub const TELEGRAM_DIGEST: &'static str = "builtin/telegram_digest@1";

    /// One line for a digest: what happened to which run, with a link.
    pub fn telegram_summary(run: &RunInfo, verdict: Option<&Verdict>) -> String {
        let (emoji, what) = match verdict {
            None => ("🔄", "started".to_owned()),
            Some(v) => match (v.outcome, v.transition) {
                (_, Transition::Broken) => ("🔴", "broke".to_owned()),
                (_, Transition::StillFailing) => ("🔴", "still failing".to_owned()),
                (_, Transition::Fixed) => ("✅", "fixed".to_owned()),
                (outcome, _) => ("⚪", outcome.as_str().replace('_', " ")),
            },
        };
        let name = format!(
            "<b>{}</b> {} on <code>{}</code>",
            escape_telegram_html(&run.repository),
            escape_telegram_html(&run.workflow),
            escape_telegram_html(run.branch.as_deref().unwrap_or("(none)")),
        );
        match &run.url {
            Some(url) => format!(
                "{emoji} {name}: <a href=\"{}\">{what}</a>",
                escape_telegram_html(url)
            ),
            None => format!("{emoji} {name}: {what}"),
        }
    }

    /// A digest: the held lines under one heading, cut cleanly to Telegram's limit.
    pub fn telegram_digest(lines: &[String]) -> String {
        let mut text = format!(
            "🗞 <b>{} build update(s) while you were away</b>\n",
            lines.len()
        );
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        truncate(text, TELEGRAM_MAX_CHARS)
    }

    /// The Telegram HTML text announcing that a run started (for subscriptions to `started`): the built-in
    /// English `build_started.telegram.en`.
    pub fn telegram_started(&self, run: &RunInfo) -> String {
        let context = BuildContext::new(run, None, Language::En);
        match self.started.render(&context) {
            Ok(rendered) => truncate(rendered.text, TELEGRAM_MAX_CHARS),
            // The built-in is validated against the same context by the tests; never reached.
            Err(_) => format!(
                "🔄 <b>{}</b>: {} started",
                escape_telegram_html(&run.repository),
                escape_telegram_html(&run.workflow)
            ),
        }
    }
}

/// Cut at a line boundary below `max` chars, so no HTML tag or entity is split.
fn truncate(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut out = String::new();
    for line in text.lines() {
        if out.chars().count() + line.chars().count() + 2 > max {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

    fn run() -> RunInfo {
        RunInfo {
            project_id: Uuid::nil(),
            provider: "github".into(),
            repository: "octo-org/<script>".into(),
            workflow: "CI & deploy".into(),
            branch: Some("main".into()),
            tag: None,
            pull_request: None,
            run_key: None,
            run_id: 1,
            run_number: Some(12),
            attempt: 1,
            commit_sha: Some("3484a3fb816e0859".into()),
            commit_message: Some("fix: a < b\n\nlong body".into()),
            author: Some("Ana".into()),
            url: Some("https://github.com/octo-org/x/actions/runs/1".into()),
        }
    }

    fn verdict(outcome: Outcome, transition: Transition) -> Verdict {
        Verdict {
            outcome,
            transition,
            previous_outcome: None,
            failure_streak: 2,
            started_at: None,
            completed_at: Utc::now(),
            duration_secs: Some(125),
            failed_jobs: vec!["lint".into()],
        }
    }

    fn id(raw: &str) -> TemplateId {
        TemplateId::parse(raw).unwrap()
    }

    fn telegram(text: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("text".to_owned(), text.to_owned())])
    }

    #[test]
    fn values_are_escaped_for_telegram_html() {
        let text = MessageRenderer::new()
            .telegram_build(&run(), &verdict(Outcome::Failed, Transition::StillFailing))
            .unwrap();
        assert!(text.contains("<b>octo-org/&lt;script&gt;</b>"), "{text}");
        assert!(
            text.contains("CI &amp; deploy is still failing (2 in a row)"),
            "{text}"
        );
        assert!(
            text.contains("Commit: <code>3484a3f</code> fix: a &lt; b\n"),
            "{text}"
        );
        assert!(text.contains("Took: 2m 5s"));
        assert!(text.contains("Failed jobs: lint"));
        assert!(text
            .contains("<a href=\"https://github.com/octo-org/x/actions/runs/1\">Open run #12</a>"));
    }

    #[test]
    fn optional_lines_disappear() {
        let mut bare = run();
        bare.commit_sha = None;
        bare.author = None;
        bare.url = None;
        let mut v = verdict(Outcome::Succeeded, Transition::Passing);
        v.duration_secs = None;
        v.failed_jobs.clear();
        let text = MessageRenderer::new().telegram_build(&bare, &v).unwrap();
        assert_eq!(
            text,
            "🟢 <b>octo-org/&lt;script&gt;</b>: CI &amp; deploy passed\nOutcome: <b>succeeded</b>\nBranch: <code>main</code>\n"
        );
    }

    #[test]
    fn a_broken_template_says_where() {
        let error = MessageRenderer::with_telegram_template("ok\n{{#if x}} never closed")
            .err()
            .unwrap();
        assert_eq!(error.line, Some(2), "{error}");
        let unknown = MessageRenderer::with_telegram_template("{{nonsense}}").unwrap();
        assert!(unknown
            .telegram_build(&run(), &verdict(Outcome::Failed, Transition::Broken))
            .is_err());
    }

    #[test]
    fn long_texts_are_cut_at_a_line() {
        let text = truncate(format!("{}\n{}", "a".repeat(10), "b".repeat(10)), 15);
        assert_eq!(text, "aaaaaaaaaa\n…");
    }

    #[test]
    fn every_builtin_is_valid_and_renders_every_outcome() {
        let outcomes = [
            (Outcome::Failed, Transition::Broken),
            (Outcome::TimedOut, Transition::StillFailing),
            (Outcome::Succeeded, Transition::Fixed),
            (Outcome::Succeeded, Transition::Passing),
            (Outcome::Cancelled, Transition::Unchanged),
            (Outcome::Skipped, Transition::Unchanged),
            (Outcome::ActionRequired, Transition::Unchanged),
        ];
        for template in TemplateId::all() {
            let compiled =
                CompiledTemplate::builtin(template).unwrap_or_else(|e| panic!("{template}: {e}"));
            assert_eq!(compiled.reference(), format!("builtin/{template}@1"));
            let mut bare = run();
            bare.commit_sha = None;
            bare.commit_message = None;
            bare.author = None;
            bare.url = None;
            bare.run_number = None;
            bare.branch = None;
            for r in [run(), bare] {
                let contexts: Vec<BuildContext> = match template.kind {
                    TemplateKind::BuildStarted => {
                        vec![BuildContext::new(&r, None, template.language)]
                    }
                    TemplateKind::BuildFinished => outcomes
                        .iter()
                        .map(|(o, t)| {
                            BuildContext::new(&r, Some(&verdict(*o, *t)), template.language)
                        })
                        .collect(),
                };
                for context in contexts {
                    let rendered = compiled
                        .render(&context)
                        .unwrap_or_else(|e| panic!("{template}: {e}"));
                    let first = rendered.subject.as_deref().unwrap_or(&rendered.text);
                    assert!(first.contains(context.emoji), "{template}");
                    assert!(!rendered.text.contains("{{"), "{template}");
                    assert_eq!(
                        rendered.subject.is_some(),
                        template.channel != TemplateChannel::Telegram
                    );
                    assert_eq!(
                        rendered.html.is_some(),
                        template.channel == TemplateChannel::Email
                    );
                }
            }
        }
    }

    #[test]
    fn german_builtins_speak_german() {
        let (run, verdict) = sample_run();
        let context = BuildContext::new(&run, Some(&verdict), Language::De);
        let rendered = CompiledTemplate::builtin(id("build_finished.email.de"))
            .unwrap()
            .render(&context)
            .unwrap();
        assert_eq!(
            rendered.subject.as_deref(),
            Some("🔴 octo-org/checkout-service: CI ist kaputt auf main")
        );
        assert!(rendered
            .text
            .contains("Fehlgeschlagene Jobs: test (ubuntu-latest), lint"));
        assert!(rendered.html.unwrap().contains("<html lang=\"de\">"));
    }

    #[test]
    fn each_channel_escapes_its_own_way() {
        let context = BuildContext::sample(TemplateKind::BuildFinished, Language::En);
        let telegram = CompiledTemplate::builtin(id("build_finished.telegram.en"))
            .unwrap()
            .render(&context)
            .unwrap();
        assert!(telegram
            .text
            .contains("Handle &lt;empty&gt; carts &amp; &quot;guest&quot; checkouts"));
        let email = CompiledTemplate::builtin(id("build_finished.email.en"))
            .unwrap()
            .render(&context)
            .unwrap();
        assert!(email
            .text
            .contains("Handle <empty> carts & \"guest\" checkouts"));
        let html = email.html.unwrap();
        assert!(html.contains("Handle &lt;empty&gt; carts &amp; &quot;guest&quot; checkouts"));
        assert!(html.contains(
            "href=\"https://github.com/octo-org/checkout-service/actions/runs/9876543210\""
        ));
        let push = CompiledTemplate::builtin(id("build_finished.push.en"))
            .unwrap()
            .render(&context)
            .unwrap();
        assert_eq!(
            push.subject.as_deref(),
            Some("🔴 octo-org/checkout-service: CI is broken")
        );
        assert!(push.text.contains("<empty> carts & \"guest\""));
    }

    #[test]
    fn validation_names_the_part_line_and_variable() {
        let finished = id("build_finished.telegram.en");
        let error = validate(finished, &telegram("ok\n{{#if url}}\nnever closed")).unwrap_err();
        assert_eq!(error.kind, TemplateErrorKind::Syntax);
        assert_eq!(error.part.as_deref(), Some("text"));
        assert!(error.line.is_some());

        let error = validate(
            finished,
            &telegram("line one\n{{#if url}}\n  {{reposit}}\n{{/if}}"),
        )
        .unwrap_err();
        assert_eq!(error.kind, TemplateErrorKind::UnknownVariable);
        assert_eq!(error.variable.as_deref(), Some("reposit"));
        assert_eq!(error.line, Some(3), "{error}");

        let error = validate(finished, &telegram("a\nb {{shout repository}}")).unwrap_err();
        assert_eq!(error.kind, TemplateErrorKind::UnknownHelper);
        assert_eq!(error.variable.as_deref(), Some("shout"));
        assert_eq!(error.line, Some(2));

        let error = validate(finished, &telegram("{{#shout}}x{{/shout}}")).unwrap_err();
        assert_eq!(error.kind, TemplateErrorKind::UnknownHelper);

        let error = validate(finished, &telegram("{{{commit_message}}}")).unwrap_err();
        assert_eq!(error.kind, TemplateErrorKind::NotAllowed);
        assert!(validate(finished, &telegram("{{> header}}")).is_err());

        let error =
            validate(id("build_started.telegram.en"), &telegram("{{duration}}")).unwrap_err();
        assert_eq!(error.variable.as_deref(), Some("duration"));

        let error = validate(finished, &BTreeMap::from([("body".into(), "x".into())])).unwrap_err();
        assert_eq!(error.kind, TemplateErrorKind::Parts);
        assert_eq!(error.part.as_deref(), Some("body"));
    }

    #[test]
    fn helpers_blocks_and_item_paths_are_understood() {
        let finished = id("build_finished.telegram.en");
        for good in [
            "{{#if (eq outcome \"failed\")}}x{{else if (gt failure_streak 2)}}y{{else}}{{headline}}{{/if}}",
            "{{#unless url}}no link{{/unless}}",
            "{{#each failed_jobs}}{{@index}} {{this}} {{../repository}} {{@root.branch}}{{/each}}",
            "{{#each failed_jobs as |job|}}{{job}}{{#if @first}}!{{/if}}{{/each}}",
            "{{#with commit}}{{this}}{{else}}none{{/with}}",
            "{{len failed_jobs}} {{lookup @root.failed_jobs 0}} {{this.branch}} {{./url}}",
            "{{!-- a comment --}}{{#if (and url (not (lt run_number 1)))}}{{url}}{{/if}}",
        ] {
            validate(finished, &telegram(good)).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for (bad, variable) in [
            ("{{@index}}", "@index"),
            ("{{#each failed_jobs}}{{branch}}{{/each}}", "branch"),
            ("{{#each failed_jobs}}{{../../url}}{{/each}}", "../../url"),
            ("{{repository.owner}}", "repository.owner"),
            ("{{this}}", "this"),
            ("{{#if (eq outcom \"failed\")}}{{/if}}", "outcom"),
            ("{{@root.nope}}", "@root.nope"),
        ] {
            let error = validate(finished, &telegram(bad)).unwrap_err();
            assert_eq!(error.variable.as_deref(), Some(variable), "{bad}: {error}");
        }
    }

    #[test]
    fn a_rendered_telegram_text_is_capped() {
        let text = "{{url}}\n".repeat(300);
        let compiled = CompiledTemplate::compile(
            id("build_finished.telegram.en"),
            &telegram(&text),
            "test@1".into(),
        )
        .unwrap();
        let rendered = compiled
            .render(&BuildContext::sample(
                TemplateKind::BuildFinished,
                Language::En,
            ))
            .unwrap();
        assert!(rendered.text.chars().count() <= TELEGRAM_RENDER_MAX_CHARS);
        assert!(rendered.text.ends_with('…'));
    }
}
