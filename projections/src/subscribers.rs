//! `subscribers` and `contacts`: who can be told, where, and how they want it; read by the planner, the bot
//! and `/api/v1/subscribers`. Two projections of the one `Subscriber` stream, because each owns one table.

use async_trait::async_trait;
use domain::{ContactAddress, Preferences, StoredEvent, SubscriberEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{decode, Projection, ProjectionError};

pub struct SubscribersProjection;

#[async_trait]
impl Projection for SubscribersProjection {
    fn name(&self) -> &'static str {
        "subscribers"
    }

    fn wants(&self, aggregate_type: &str) -> bool {
        aggregate_type == "Subscriber"
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let id = event.aggregate_id.as_str();
        let at = event.recorded_at;
        match decode::<SubscriberEvent>(event)? {
            SubscriberEvent::SubscriberRegistered {
                name,
                preferences,
                registered_at,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO subscribers (subscriber_id, name, time_zone, language, created_at, updated_at, version)
                     VALUES ($1::uuid, $2, 'UTC', 'en', $3, $3, $4) ON CONFLICT (subscriber_id) DO NOTHING",
                )
                .bind(id)
                .bind(name)
                .bind(registered_at)
                .bind(event.sequence)
                .execute(&mut *tx)
                .await?;
                set_preferences(tx, id, &preferences).await?;
            }
            SubscriberEvent::PreferencesChanged { preferences, .. } => {
                set_preferences(tx, id, &preferences).await?;
            }
            SubscriberEvent::Muted { until, .. } => {
                sqlx::query("UPDATE subscribers SET muted = true, muted_until = $2 WHERE subscriber_id = $1::uuid")
                    .bind(id)
                    .bind(until)
                    .execute(&mut *tx)
                    .await?;
            }
            SubscriberEvent::Unmuted { .. } => {
                sqlx::query("UPDATE subscribers SET muted = false, muted_until = NULL WHERE subscriber_id = $1::uuid")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            // Contact events belong to the `contacts` table; the subscriber's row only records the change.
            _ => {}
        }
        sqlx::query(
            "UPDATE subscribers SET updated_at = $2, version = $3 WHERE subscriber_id = $1::uuid",
        )
        .bind(id)
        .bind(at)
        .bind(event.sequence)
        .execute(tx)
        .await?;
        Ok(())
    }
}

async fn set_preferences(
    tx: &mut PgConnection,
    id: &str,
    preferences: &Preferences,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE subscribers SET time_zone = $2, language = $3, quiet_start = $4, quiet_end = $5,
                digest_minutes = $6, edit_in_place = $7 WHERE subscriber_id = $1::uuid",
    )
    .bind(id)
    .bind(preferences.time_zone.as_str())
    .bind(preferences.language.as_str())
    .bind(preferences.quiet_hours.map(|q| q.start))
    .bind(preferences.quiet_hours.map(|q| q.end))
    .bind(preferences.digest_minutes.map(|m| m as i32))
    .bind(preferences.edit_in_place)
    .execute(tx)
    .await?;
    Ok(())
}

pub struct ContactsProjection;

#[async_trait]
impl Projection for ContactsProjection {
    fn name(&self) -> &'static str {
        "contacts"
    }

    fn wants(&self, aggregate_type: &str) -> bool {
        aggregate_type == "Subscriber"
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let subscriber = event.aggregate_id.as_str();
        let at = event.recorded_at;
        let (contact_id, change) = match decode::<SubscriberEvent>(event)? {
            SubscriberEvent::ContactAdded {
                contact_id,
                address,
                verified,
                ..
            } => return insert(tx, subscriber, contact_id, &address, verified, at).await,
            SubscriberEvent::TelegramLinked {
                contact_id,
                address,
                ..
            } => return insert(tx, subscriber, contact_id, &address, true, at).await,
            SubscriberEvent::ContactVerified { contact_id, .. } => (contact_id, "verified = true"),
            SubscriberEvent::ContactDisabled {
                contact_id, reason, ..
            } => {
                sqlx::query(
                    "UPDATE contacts SET enabled = false, disabled_reason = $2, updated_at = $3 WHERE contact_id = $1",
                )
                .bind(contact_id)
                .bind(reason)
                .bind(at)
                .execute(tx)
                .await?;
                return Ok(());
            }
            SubscriberEvent::ContactEnabled { contact_id, .. } => {
                (contact_id, "enabled = true, disabled_reason = NULL")
            }
            SubscriberEvent::ContactRemoved { contact_id, .. } => (contact_id, "removed = true"),
            _ => return Ok(()),
        };
        sqlx::query(&format!(
            "UPDATE contacts SET {change}, updated_at = $2 WHERE contact_id = $1"
        ))
        .bind(contact_id)
        .bind(at)
        .execute(tx)
        .await?;
        Ok(())
    }
}

async fn insert(
    tx: &mut PgConnection,
    subscriber_id: &str,
    contact_id: Uuid,
    address: &ContactAddress,
    verified: bool,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), ProjectionError> {
    let (chat_id, topic_id, email) = match address {
        ContactAddress::Telegram {
            chat_id, topic_id, ..
        } => (Some(chat_id.get()), *topic_id, None),
        ContactAddress::Email { address } => (None, None, Some(address.as_str())),
        _ => (None, None, None),
    };
    sqlx::query(
        "INSERT INTO contacts (contact_id, subscriber_id, kind, address, chat_id, topic_id, email, verified, enabled,
                               created_at, updated_at)
         VALUES ($1, $2::uuid, $3, $4, $5, $6, $7, $8, true, $9, $9) ON CONFLICT (contact_id) DO NOTHING",
    )
    .bind(contact_id)
    .bind(subscriber_id)
    .bind(address.kind())
    .bind(sqlx::types::Json(address))
    .bind(chat_id)
    .bind(topic_id)
    .bind(email)
    .bind(verified)
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}
