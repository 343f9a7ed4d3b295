//! `notifications`: where each notification stands, for operators and tests. The trail itself is the log.
//!
//! Events are applied a batch at a time, as the build read models do (builds.rs): the batch's rows are read in
//! one query, every event is folded onto them in memory, and each touched row is written back once, with one
//! change notice for the batch. A sent message is three events (planned, attempt started, delivered), and
//! writing them one statement each made this read model the slowest consumer of the delivery pipeline, which
//! the in-process relay waits for (docs/benchmarks.md, "Delivery in batches").

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{NotificationEvent, StoredEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{decode, micros, Projection, ProjectionError};

pub struct NotificationsProjection;

/// A `notifications` row, as the fold holds it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct Row {
    notification_id: Uuid,
    build_run_id: String,
    project_id: Uuid,
    subscription_id: Uuid,
    channel: Option<String>,
    status: String,
    reason: Option<String>,
    attempts: i32,
    provider_message_id: Option<String>,
    last_error: Option<String>,
    next_attempt_at: Option<DateTime<Utc>>,
    planned_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    latency_ms: Option<i64>,
}

impl Row {
    /// The row a notification's first event creates.
    #[allow(clippy::too_many_arguments)]
    fn new(
        notification_id: Uuid,
        build_run_id: &str,
        project_id: Uuid,
        subscription_id: Uuid,
        channel: Option<&str>,
        status: &str,
        planned_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    ) -> Self {
        Self {
            notification_id,
            build_run_id: build_run_id.to_owned(),
            project_id,
            subscription_id,
            channel: channel.map(str::to_owned),
            status: status.to_owned(),
            reason: None,
            attempts: 0,
            provider_message_id: None,
            last_error: None,
            next_attempt_at: None,
            planned_at,
            updated_at,
            delivered_at: None,
            latency_ms: None,
        }
    }

    /// A later event's change to the row; `updated_at` is when the event was recorded.
    fn fold(&mut self, event: &NotificationEvent, updated_at: DateTime<Utc>) {
        use NotificationEvent as E;
        match event {
            // A row exists already: it was created by the notification's first event, and a second "first"
            // event changes nothing (as `ON CONFLICT DO NOTHING` did).
            E::NotificationPlanned { .. }
            | E::NotificationSuppressed { .. }
            | E::NotificationHeld { .. } => return,
            E::FoldedIntoDigest { digest_id, .. } => {
                self.status = "digested".to_owned();
                self.reason = Some(format!("digest {digest_id}"));
                self.next_attempt_at = None;
            }
            E::AttemptStarted { attempt, .. } => {
                self.status = "sending".to_owned();
                self.attempts = i32::try_from(*attempt).unwrap_or(i32::MAX);
            }
            E::Delivered {
                provider_message_id,
                delivered_at,
                ..
            } => {
                self.status = "delivered".to_owned();
                self.provider_message_id.clone_from(provider_message_id);
                self.next_attempt_at = None;
                self.delivered_at = Some(*delivered_at);
                // Latency as the subscriber sees it: from the planner's decision to the provider's acceptance,
                // retries and rate-limit waits included; to the nearest millisecond of what Postgres holds.
                let micros_between = (micros(*delivered_at) - micros(self.planned_at))
                    .num_microseconds()
                    .unwrap_or(i64::MAX);
                self.latency_ms = Some(micros_between.max(0).saturating_add(500) / 1000);
            }
            E::AttemptInterrupted { retry_at, .. } => {
                self.status = "retrying".to_owned();
                self.last_error =
                    Some("interrupted: the outcome of the attempt is unknown".to_owned());
                self.next_attempt_at = *retry_at;
            }
            E::AttemptFailed {
                failure, retry_at, ..
            } => {
                self.status = "retrying".to_owned();
                self.last_error = Some(failure.description.clone());
                self.next_attempt_at = *retry_at;
            }
            E::NotificationRedriven { redriven_at, .. } => {
                self.status = "redriven".to_owned();
                self.reason = None;
                self.next_attempt_at = Some(*redriven_at);
            }
            E::DeadLetterDiscarded { reason, .. } => {
                self.status = "discarded".to_owned();
                self.reason = Some(reason.clone());
            }
            E::DeadLettered { reason, .. } => {
                self.status = "dead_lettered".to_owned();
                self.reason = Some(reason.clone());
                self.next_attempt_at = None;
            }
        }
        self.updated_at = updated_at;
    }
}

/// The row a notification's first event creates; `None` for every later event.
fn created(event: &NotificationEvent, updated_at: DateTime<Utc>) -> Option<Row> {
    use NotificationEvent as E;
    match event {
        E::NotificationPlanned {
            notification_id,
            build_run_id,
            project_id,
            subscription_id,
            channel,
            planned_at,
            ..
        } => {
            let mut row = Row::new(
                *notification_id,
                build_run_id,
                *project_id,
                *subscription_id,
                Some(channel.kind().as_str()),
                "planned",
                *planned_at,
                updated_at,
            );
            row.next_attempt_at = Some(*planned_at);
            Some(row)
        }
        E::NotificationSuppressed {
            notification_id,
            build_run_id,
            project_id,
            subscription_id,
            reason,
            suppressed_at,
            ..
        } => {
            let mut row = Row::new(
                *notification_id,
                build_run_id,
                *project_id,
                *subscription_id,
                None,
                "suppressed",
                *suppressed_at,
                updated_at,
            );
            row.reason = Some(reason.clone());
            Some(row)
        }
        E::NotificationHeld {
            notification_id,
            build_run_id,
            project_id,
            subscription_id,
            reason,
            channel,
            held_until,
            held_at,
            ..
        } => {
            let mut row = Row::new(
                *notification_id,
                build_run_id,
                *project_id,
                *subscription_id,
                Some(channel.kind().as_str()),
                "held",
                *held_at,
                updated_at,
            );
            row.reason = Some(reason.clone());
            row.next_attempt_at = Some(*held_until);
            Some(row)
        }
        _ => None,
    }
}

async fn load(tx: &mut PgConnection, ids: &[Uuid]) -> Result<HashMap<Uuid, Row>, sqlx::Error> {
    // Planned for the ids given, every time: a plan cached while the table was small reads all of it (why:
    // LOAD_MANY in commands/src/event_log.rs).
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT notification_id, build_run_id, project_id, subscription_id, channel, status, reason, attempts,
                provider_message_id, last_error, next_attempt_at, planned_at, updated_at, delivered_at, latency_ms
           FROM notifications WHERE notification_id = ANY($1)",
    )
    .persistent(false)
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.notification_id, row))
        .collect())
}

/// Write the folded rows in one statement.
async fn store(tx: &mut PgConnection, rows: &[&Row]) -> Result<(), sqlx::Error> {
    macro_rules! column {
        ($field:ident) => {
            rows.iter().map(|r| r.$field.clone()).collect::<Vec<_>>()
        };
    }
    sqlx::query(
        "INSERT INTO notifications (notification_id, build_run_id, project_id, subscription_id, channel, status,
                                    reason, attempts, provider_message_id, last_error, next_attempt_at,
                                    planned_at, updated_at, delivered_at, latency_ms)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[],
                              $8::int[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[],
                              $13::timestamptz[], $14::timestamptz[], $15::bigint[])
         ON CONFLICT (notification_id) DO UPDATE SET
             status = EXCLUDED.status, reason = EXCLUDED.reason, attempts = EXCLUDED.attempts,
             provider_message_id = EXCLUDED.provider_message_id, last_error = EXCLUDED.last_error,
             next_attempt_at = EXCLUDED.next_attempt_at, updated_at = EXCLUDED.updated_at,
             delivered_at = EXCLUDED.delivered_at, latency_ms = EXCLUDED.latency_ms",
    )
    .bind(column!(notification_id))
    .bind(column!(build_run_id))
    .bind(column!(project_id))
    .bind(column!(subscription_id))
    .bind(column!(channel))
    .bind(column!(status))
    .bind(column!(reason))
    .bind(column!(attempts))
    .bind(column!(provider_message_id))
    .bind(column!(last_error))
    .bind(column!(next_attempt_at))
    .bind(column!(planned_at))
    .bind(column!(updated_at))
    .bind(column!(delivered_at))
    .bind(column!(latency_ms))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[async_trait]
impl Projection for NotificationsProjection {
    fn name(&self) -> &'static str {
        "notifications"
    }

    fn wants(&self, aggregate_type: &str) -> bool {
        aggregate_type == "Notification"
    }

    async fn apply_many(
        &self,
        tx: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut decoded = Vec::with_capacity(events.len());
        for event in events {
            // An aggregate id that is not a notification's id names no row.
            let Ok(aggregate_id) = event.aggregate_id.parse::<Uuid>() else {
                continue;
            };
            let notification: NotificationEvent = decode(event)?;
            // A row is created under the id its first event names, and changed under its aggregate's.
            let key = match &notification {
                NotificationEvent::NotificationPlanned {
                    notification_id, ..
                }
                | NotificationEvent::NotificationSuppressed {
                    notification_id, ..
                }
                | NotificationEvent::NotificationHeld {
                    notification_id, ..
                } => *notification_id,
                _ => aggregate_id,
            };
            decoded.push((key, event.recorded_at, notification));
        }
        let ids: Vec<Uuid> = decoded.iter().map(|(key, ..)| *key).collect();
        let mut rows = load(tx, &ids).await?;
        let mut touched = BTreeSet::new();
        for (key, recorded_at, notification) in &decoded {
            match rows.get_mut(key) {
                Some(row) => row.fold(notification, *recorded_at),
                None => match created(notification, *recorded_at) {
                    Some(row) => {
                        rows.insert(*key, row);
                    }
                    // A later event of a notification with no row changes nothing (as an UPDATE of no row).
                    None => continue,
                },
            }
            touched.insert(*key);
        }
        if touched.is_empty() {
            return Ok(());
        }
        let changed: Vec<&Row> = touched.iter().filter_map(|key| rows.get(key)).collect();
        store(tx, &changed).await?;
        // One notice for the batch: the notifications' answers are over every project.
        crate::changes::notify(tx, "notifications", None).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn planned_at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 10, 0, 0).unwrap()
    }

    fn planned_row() -> Row {
        Row::new(
            Uuid::new_v4(),
            "run",
            Uuid::new_v4(),
            Uuid::new_v4(),
            Some("telegram"),
            "planned",
            planned_at(),
            planned_at(),
        )
    }

    fn delivered(after: chrono::Duration) -> NotificationEvent {
        NotificationEvent::Delivered {
            attempt: 1,
            provider_message_id: Some("42".to_owned()),
            latency_ms: Default::default(),
            possible_duplicate: false,
            delivered_at: planned_at() + after,
        }
    }

    /// The same rounding Postgres did when the latency was computed in SQL (`numeric` to `bigint`: half away
    /// from zero), on the microseconds it holds, and never below zero.
    #[test]
    fn latency_is_rounded_to_the_nearest_millisecond_of_what_postgres_holds() {
        for (after_nanos, expected) in [
            (1_499_999_000, 1_500),
            (1_499_000, 1),
            (1_500_000, 2),
            // Nanoseconds Postgres would not keep do not round up.
            (1_499_999, 1),
            (-3_000_000, 0),
        ] {
            let mut row = planned_row();
            let delivered_after = chrono::Duration::nanoseconds(after_nanos);
            row.fold(&delivered(delivered_after), planned_at());
            assert_eq!(row.latency_ms, Some(expected), "{after_nanos} ns");
            assert_eq!(row.status, "delivered");
            assert_eq!(row.provider_message_id.as_deref(), Some("42"));
            assert_eq!(row.next_attempt_at, None);
        }
    }

    #[test]
    fn a_second_first_event_leaves_the_row_as_it_was() {
        let mut row = planned_row();
        row.fold(&delivered(chrono::Duration::seconds(1)), planned_at());
        let before = row.clone();
        let again = NotificationEvent::NotificationSuppressed {
            notification_id: row.notification_id,
            build_run_id: "run".to_owned(),
            project_id: row.project_id,
            subscription_id: row.subscription_id,
            subscription_version: 1,
            reason: "muted".to_owned(),
            suppressed_at: planned_at(),
        };
        row.fold(&again, planned_at() + chrono::Duration::hours(1));
        assert_eq!(row, before);
    }
}
