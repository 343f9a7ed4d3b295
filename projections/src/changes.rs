//! Change notices: a projection that changed rows says so with `pg_notify` inside its own transaction, so the
//! notice is sent exactly when (and only if) the change commits, to every process listening: API replicas drop
//! cached answers over those rows and wake their live-update streams. Postgres folds identical notices of one
//! transaction into one, so a rebuild batch sends a handful, not one per event.
//!
//! A notice is a hint, not a record: a listener that lost its connection cannot know what it missed and must
//! treat everything as changed (see `api`'s cache), and the cache's TTL bounds the staleness of a lost notice.

use sqlx::PgConnection;
use uuid::Uuid;

/// The Postgres notification channel.
pub const CHANNEL: &str = "herald_read_models";

/// What changed: which projection's rows, and for which project when the change belongs to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub projection: String,
    pub project_id: Option<Uuid>,
}

impl Change {
    /// Read a notice's payload (`projection` or `projection:project-id`).
    pub fn parse(payload: &str) -> Option<Self> {
        let (projection, project) = match payload.split_once(':') {
            Some((projection, project)) => (projection, Some(project.parse().ok()?)),
            None => (payload, None),
        };
        (!projection.is_empty()).then(|| Self {
            projection: projection.to_owned(),
            project_id: project,
        })
    }

    fn payload(&self) -> String {
        match self.project_id {
            Some(project) => format!("{}:{project}", self.projection),
            None => self.projection.clone(),
        }
    }
}

/// Queue a notice in the caller's transaction; it goes out on commit.
pub async fn notify(
    conn: &mut PgConnection,
    projection: &str,
    project_id: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    let change = Change {
        projection: projection.to_owned(),
        project_id,
    };
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(change.payload())
        .execute(conn)
        .await?;
    Ok(())
}

/// The end of a statement whose `stored` CTE returns the `project_id` of every row it wrote: one notice per
/// project, queued in the same round trip as the write (the live path applies a batch of one or two events,
/// where a separate notice statement was a third of a read model's round trips).
pub(crate) fn notify_stored(projection: &str) -> String {
    format!(
        "SELECT count(pg_notify('{CHANNEL}', '{projection}:' || p::text))
           FROM (SELECT DISTINCT project_id AS p FROM stored) AS d"
    )
}

/// Queue one notice per project in one statement: what a batch that touched many projects' rows sends.
pub async fn notify_projects(
    conn: &mut PgConnection,
    projection: &str,
    projects: impl IntoIterator<Item = Uuid>,
) -> Result<(), sqlx::Error> {
    let payloads: Vec<String> = projects
        .into_iter()
        .map(|project| {
            Change {
                projection: projection.to_owned(),
                project_id: Some(project),
            }
            .payload()
        })
        .collect();
    if payloads.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, payload) FROM UNNEST($2::text[]) AS p(payload)")
        .bind(CHANNEL)
        .bind(payloads)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back_as_the_change_they_name() {
        let project = Uuid::new_v4();
        let with = Change {
            projection: "build_runs".into(),
            project_id: Some(project),
        };
        assert_eq!(Change::parse(&with.payload()), Some(with));
        let without = Change {
            projection: "notifications".into(),
            project_id: None,
        };
        assert_eq!(Change::parse(&without.payload()), Some(without));
        assert_eq!(Change::parse("build_runs:not-a-uuid"), None);
        assert_eq!(Change::parse(""), None);
    }
}
