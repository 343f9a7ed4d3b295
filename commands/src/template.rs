//! Message texts, rendered with handlebars. Telegram's HTML mode accepts only `&lt; &gt; &amp; &quot;` and
//! numeric entities, so values are escaped with exactly those; the template itself may use Telegram's tags.

use domain::{Outcome, RunInfo, Transition, Verdict};
use handlebars::Handlebars;
use serde::Serialize;

/// Telegram rejects texts longer than this (in UTF-16 code units; counting chars is a safe lower bound for
/// the texts Herald writes, which are mostly ASCII).
const TELEGRAM_MAX_CHARS: usize = 4096;

const TELEGRAM_BUILD: &str = "\
{{emoji}} <b>{{repository}}</b>: {{workflow}} {{headline}}
Outcome: <b>{{outcome}}</b>
Branch: <code>{{branch}}</code>
{{#if commit}}Commit: <code>{{commit}}</code>{{#if commit_message}} {{commit_message}}{{/if}}
{{/if}}{{#if author}}By: {{author}}
{{/if}}{{#if duration}}Took: {{duration}}
{{/if}}{{#if failed_jobs}}Failed jobs: {{failed_jobs}}
{{/if}}{{#if url}}<a href=\"{{url}}\">Open run{{#if run_number}} #{{run_number}}{{/if}}</a>{{/if}}";

#[derive(Serialize)]
struct BuildMessage<'a> {
    emoji: &'static str,
    headline: String,
    outcome: &'static str,
    repository: &'a str,
    workflow: &'a str,
    branch: &'a str,
    commit: Option<&'a str>,
    commit_message: Option<String>,
    author: Option<&'a str>,
    duration: Option<String>,
    failed_jobs: Option<String>,
    url: Option<&'a str>,
    run_number: Option<i64>,
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

/// A template that does not compile, with the line where it goes wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template error{}: {message}", line.map(|l| format!(" on line {l}")).unwrap_or_default())]
pub struct TemplateError {
    pub line: Option<usize>,
    pub message: String,
}

pub struct MessageRenderer {
    registry: Handlebars<'static>,
}

impl Default for MessageRenderer {
    fn default() -> Self {
        Self::new()
    }
}

fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

impl MessageRenderer {
    /// The built-in Telegram build template, as notifications record it (`name@version`). Bump the version
    /// whenever its text changes, so the audit trail tells old and new messages apart.
    pub const TELEGRAM_BUILD: &'static str = "builtin/telegram_build@1";

    pub fn new() -> Self {
        Self::with_telegram_template(TELEGRAM_BUILD).expect("the built-in template is valid")
    }

    /// A renderer with a proposed Telegram template instead of the built-in one. Variables: `emoji`, `headline`,
    /// `outcome`, `repository`, `workflow`, `branch`, `commit`, `commit_message`, `author`, `duration`,
    /// `failed_jobs`, `url`, `run_number`.
    pub fn with_telegram_template(template: &str) -> Result<Self, TemplateError> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(escape_telegram_html);
        registry
            .register_template_string("telegram_build", template)
            .map_err(|e| TemplateError {
                line: e.pos().map(|(line, _)| line),
                message: e.reason().to_string(),
            })?;
        Ok(Self { registry })
    }

    /// The Telegram HTML text announcing a build verdict.
    pub fn telegram_build(
        &self,
        run: &RunInfo,
        verdict: &Verdict,
    ) -> Result<String, handlebars::RenderError> {
        let (emoji, headline) = match (verdict.outcome, verdict.transition) {
            (_, Transition::Broken) => ("🔴", "is broken".to_owned()),
            (_, Transition::StillFailing) => (
                "🔴",
                format!("is still failing ({} in a row)", verdict.failure_streak),
            ),
            (_, Transition::Fixed) => ("✅", "is fixed".to_owned()),
            (Outcome::Succeeded, _) => ("🟢", "passed".to_owned()),
            (Outcome::Cancelled, _) => ("⚪", "was cancelled".to_owned()),
            (Outcome::Skipped, _) => ("⚪", "was skipped".to_owned()),
            (Outcome::ActionRequired, _) => ("🟡", "needs an action".to_owned()),
            (Outcome::Failed | Outcome::TimedOut, _) => ("🔴", "failed".to_owned()),
        };
        let message = BuildMessage {
            emoji,
            headline,
            outcome: verdict.outcome.as_str(),
            repository: &run.repository,
            workflow: &run.workflow,
            branch: run.branch.as_deref().unwrap_or("(none)"),
            commit: run.commit_sha.as_deref().map(|s| &s[..s.len().min(7)]),
            commit_message: run.commit_message.as_deref().and_then(|m| {
                let first_line = m.lines().next()?.trim();
                let short: String = first_line.chars().take(200).collect();
                (!short.is_empty()).then_some(short)
            }),
            author: run.author.as_deref(),
            duration: verdict.duration_secs.map(human_duration),
            failed_jobs: (!verdict.failed_jobs.is_empty()).then(|| verdict.failed_jobs.join(", ")),
            url: run.url.as_deref(),
            run_number: run.run_number,
        };
        let text = self.registry.render("telegram_build", &message)?;
        Ok(truncate(text, TELEGRAM_MAX_CHARS))
    }
}

impl MessageRenderer {
    /// The built-in "a run started" text, as notifications record it.
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

    /// The Telegram HTML text announcing that a run started (for subscriptions to `started`).
    pub fn telegram_started(&self, run: &RunInfo) -> String {
        let mut text = format!(
            "🔄 <b>{}</b>: {} started\nBranch: <code>{}</code>",
            escape_telegram_html(&run.repository),
            escape_telegram_html(&run.workflow),
            escape_telegram_html(run.branch.as_deref().unwrap_or("(none)")),
        );
        if let Some(url) = &run.url {
            text.push_str(&format!(
                "\n<a href=\"{}\">Open run</a>",
                escape_telegram_html(url)
            ));
        }
        truncate(text, TELEGRAM_MAX_CHARS)
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
}
