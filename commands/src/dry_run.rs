//! Dry runs: replay a time range of build verdicts through the planner's decision with a proposed
//! subscription (and, optionally, a proposed template) and report what would have been sent, sending nothing
//! and recording nothing.

use chrono::{DateTime, Utc};
use domain::{BuildRunEvent, OutcomeFilter};
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::planning::{decide, Decision, Recipient};
use crate::template::{MessageRenderer, TemplateError};

/// Verdicts considered per dry run; narrow the range to see more.
pub const MAX_VERDICTS: i64 = 5_000;

#[derive(Debug, Clone)]
pub struct DryRunRequest {
    pub project_id: Uuid,
    pub outcomes: Vec<OutcomeFilter>,
    /// A proposed Telegram template; the built-in one when absent.
    pub template: Option<String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DryRunEntry {
    pub build_run_id: String,
    pub completed_at: DateTime<Utc>,
    pub repository: String,
    pub workflow: String,
    pub branch: Option<String>,
    pub outcome: &'static str,
    pub transition: &'static str,
    /// `would_send`, `would_suppress` or `template_error`.
    pub decision: &'static str,
    pub reason: Option<String>,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DryRunReport {
    pub verdicts: usize,
    pub would_send: usize,
    pub would_suppress: usize,
    pub template_errors: usize,
    pub entries: Vec<DryRunEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

pub async fn dry_run(pool: &PgPool, request: &DryRunRequest) -> Result<DryRunReport, DryRunError> {
    if request.to <= request.from {
        return Err(DryRunError::Invalid("to must be after from".into()));
    }
    if request.outcomes.is_empty() {
        return Err(DryRunError::Invalid(
            "outcomes: at least one outcome filter is required".into(),
        ));
    }
    let filter = domain::SubscriptionFilter {
        scope: domain::ProjectScope::Projects(vec![request.project_id]),
        branches: Vec::new(),
        exclude_branches: Vec::new(),
        outcomes: request.outcomes.clone(),
        workflows: Vec::new(),
        min_interval_secs: 0,
    };
    let renderer = match &request.template {
        Some(template) => MessageRenderer::with_telegram_template(template)?,
        None => MessageRenderer::new(),
    };
    let rows = sqlx::query(
        "SELECT aggregate_id, event_type, event_version, payload::jsonb AS payload FROM events
          WHERE aggregate_type = 'BuildRun' AND event_type IN ('BuildSucceeded', 'BuildFailed', 'BuildCancelled')
            AND recorded_at >= $1 AND recorded_at < $2
            AND payload -> event_type -> 'run' ->> 'project_id' = $3
          ORDER BY global_seq LIMIT $4",
    )
    .bind(request.from)
    .bind(request.to)
    .bind(request.project_id.to_string())
    .bind(MAX_VERDICTS)
    .fetch_all(pool)
    .await?;
    let mut report = DryRunReport {
        verdicts: rows.len(),
        would_send: 0,
        would_suppress: 0,
        template_errors: 0,
        entries: Vec::with_capacity(rows.len()),
    };
    for row in rows {
        let build_run_id: String = row.try_get("aggregate_id")?;
        let event_type: String = row.try_get("event_type")?;
        let version: String = row.try_get("event_version")?;
        let (_, payload) = domain::upcast::upcast(&event_type, &version, row.try_get("payload")?);
        let Ok(event) = serde_json::from_value::<BuildRunEvent>(payload) else {
            continue;
        };
        let Some((run, verdict)) = event.verdict() else {
            continue;
        };
        let facts = domain::RunFacts {
            project_id: run.project_id,
            repository: &run.repository,
            branch: run.branch.as_deref(),
            workflow: &run.workflow,
            verdict: Some((verdict.outcome, verdict.transition)),
        };
        let (decision, reason, text) =
            match decide(&filter, &facts, &Recipient::default(), Utc::now()) {
                Decision::Send => match renderer.telegram_build(run, verdict) {
                    Ok(text) => {
                        report.would_send += 1;
                        ("would_send", None, Some(text))
                    }
                    Err(e) => {
                        report.template_errors += 1;
                        ("template_error", Some(e.to_string()), None)
                    }
                },
                Decision::Suppress { reason } | Decision::Hold { reason, .. } => {
                    report.would_suppress += 1;
                    ("would_suppress", Some(reason.to_owned()), None)
                }
            };
        report.entries.push(DryRunEntry {
            build_run_id,
            completed_at: verdict.completed_at,
            repository: run.repository.clone(),
            workflow: run.workflow.clone(),
            branch: run.branch.clone(),
            outcome: verdict.outcome.as_str(),
            transition: verdict.transition.as_str(),
            decision,
            reason,
            text,
        });
    }
    Ok(report)
}
