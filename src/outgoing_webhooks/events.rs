//! What an outgoing webhook can say, and how an event is queued: [`emit`],
//! called by the store function that makes the change, in its transaction,
//! so the event commits with the change or not at all.
//!
//! An event costs one small query when no endpoint wants it (the endpoints'
//! table holds a handful of rows). When one does, its data is read by the
//! store that owns its subject (the subscriber's record, the issue's
//! counts), through the reader the caller passes, and one delivery per
//! endpoint is inserted by one `INSERT … SELECT`. The readers are passed
//! rather than called from here so that this module, which the stores call,
//! calls none of them back. The workers find the delivery at their next
//! poll (see [`emit`] for why not a notification).

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

/// The channel the webhook workers listen on: an admin's retry or an
/// endpoint enabled again wakes them at once.
pub const CHANNEL: &str = "webhook_deliveries";

/// Every event an endpoint can ask for. The migration's check constraint
/// lists the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    SubscriberCreated,
    SubscriberConfirmed,
    SubscriberUnsubscribed,
    SubscriberBounced,
    SubscriberComplained,
    SubscriberErased,
    IssuePublished,
    IssueFinished,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        EventType::SubscriberCreated,
        EventType::SubscriberConfirmed,
        EventType::SubscriberUnsubscribed,
        EventType::SubscriberBounced,
        EventType::SubscriberComplained,
        EventType::SubscriberErased,
        EventType::IssuePublished,
        EventType::IssueFinished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::SubscriberCreated => "subscriber.created",
            EventType::SubscriberConfirmed => "subscriber.confirmed",
            EventType::SubscriberUnsubscribed => "subscriber.unsubscribed",
            EventType::SubscriberBounced => "subscriber.bounced",
            EventType::SubscriberComplained => "subscriber.complained",
            EventType::SubscriberErased => "subscriber.erased",
            EventType::IssuePublished => "issue.published",
            EventType::IssueFinished => "issue.finished",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == raw)
            .ok_or_else(|| {
                format!(
                    "`{}` is not an event this service sends.",
                    raw.escape_debug()
                )
            })
    }

    /// The events an endpoint asks for, as the admin's form and the API
    /// take them: at least one, each a known name, each kept once.
    pub fn parse_list(raw: &[String]) -> Result<Vec<Self>, String> {
        if raw.is_empty() {
            return Err("Choose at least one event.".into());
        }
        let mut events = Vec::new();
        for name in raw {
            let kind = Self::parse(name)?;
            if !events.contains(&kind) {
                events.push(kind);
            }
        }
        Ok(events)
    }

    /// What the admin's form says of it.
    pub fn label(self) -> &'static str {
        match self {
            EventType::SubscriberCreated => "A subscriber signed up",
            EventType::SubscriberConfirmed => "A subscriber confirmed",
            EventType::SubscriberUnsubscribed => "A subscriber unsubscribed",
            EventType::SubscriberBounced => "An email to a subscriber bounced",
            EventType::SubscriberComplained => "A subscriber marked an email as spam",
            EventType::SubscriberErased => "A subscriber was erased",
            EventType::IssuePublished => "An issue was published",
            EventType::IssueFinished => "An issue finished sending",
        }
    }
}

/// Whom or what an event is about: the data sent is read from its owner
/// when, and only when, an endpoint wants the event.
#[derive(Debug, Clone)]
enum About {
    Subscriber(Uuid),
    /// A subscriber known by address (a provider's bounce report).
    Address(String),
    /// Gone: the id is all there is to say.
    Erased(Uuid),
    Issue(Uuid),
}

/// One thing that happened, to be sent to every endpoint that asked for it.
#[derive(Debug, Clone)]
pub struct Event {
    kind: EventType,
    about: About,
    /// Added to the data, beside what its owner says of the subject.
    extra: Map<String, Value>,
}

impl Event {
    fn new(kind: EventType, about: About) -> Self {
        Self {
            kind,
            about,
            extra: Map::new(),
        }
    }

    pub fn subscriber_created(id: Uuid) -> Self {
        Self::new(EventType::SubscriberCreated, About::Subscriber(id))
    }

    pub fn subscriber_confirmed(id: Uuid, lists: &[Uuid]) -> Self {
        Self::new(EventType::SubscriberConfirmed, About::Subscriber(id))
            .with("confirmed_lists", json!(lists))
    }

    pub fn subscriber_unsubscribed(id: Uuid) -> Self {
        Self::new(EventType::SubscriberUnsubscribed, About::Subscriber(id))
    }

    /// `kind`: "hard" or "soft". Sent only when the address is a
    /// subscriber's.
    pub fn subscriber_bounced(address: &str, kind: &str) -> Self {
        Self::new(
            EventType::SubscriberBounced,
            About::Address(address.to_lowercase()),
        )
        .with("bounce", json!(kind))
    }

    /// Sent only when the address is a subscriber's.
    pub fn subscriber_complained(address: &str) -> Self {
        Self::new(
            EventType::SubscriberComplained,
            About::Address(address.to_lowercase()),
        )
    }

    /// Carries the id alone: the address is gone.
    pub fn subscriber_erased(id: Uuid) -> Self {
        Self::new(EventType::SubscriberErased, About::Erased(id))
    }

    pub fn issue_published(id: Uuid) -> Self {
        Self::new(EventType::IssuePublished, About::Issue(id))
    }

    pub fn issue_finished(id: Uuid) -> Self {
        Self::new(EventType::IssueFinished, About::Issue(id))
    }

    fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub fn kind(&self) -> EventType {
        self.kind
    }
}

/// What the store that owns an event's subject says of it.
#[derive(Debug, sqlx::FromRow)]
pub struct Subject {
    pub id: Uuid,
    /// A subscriber's address in lower case, to match a report that names
    /// it; `None` for an issue.
    pub address: Option<String>,
    pub data: sqlx::types::Json<Value>,
}

/// Queues `events` for every enabled endpoint that asked for their types,
/// in the caller's transaction. Nothing is written when none did. `read`
/// is the subjects' owner's: given ids and lower-case addresses, what it
/// says of each it has ([`Subject`]).
///
/// The workers find the deliveries at their next poll
/// (`outgoing_webhooks.poll_interval_milliseconds`), not by a notification:
/// a NOTIFY inside the change's transaction would make Postgres serialise
/// the commits of every sign-up once an endpoint wants `subscriber.created`
/// (the reason the outbox's trigger was dropped), and the caller holds a
/// connection, not a transaction that could notify after its commit. A
/// webhook a second late costs nothing; a sign-up rate capped by the WAL
/// flush would.
#[tracing::instrument(name = "Emit webhook events", level = "debug", skip_all, fields(events = events.len()))]
pub async fn emit(
    connection: &mut PgConnection,
    events: &[Event],
    read: impl AsyncFnOnce(&mut PgConnection, &[Uuid], &[String]) -> Result<Vec<Subject>, sqlx::Error>,
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let wanted: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT kind FROM webhook_endpoints, unnest(events) AS kind \
         WHERE enabled AND kind = ANY($1)",
    )
    .bind(&kinds)
    .fetch_all(&mut *connection)
    .await?;
    if wanted.is_empty() {
        return Ok(());
    }
    let events: Vec<&Event> = events
        .iter()
        .filter(|e| wanted.iter().any(|w| w == e.kind.as_str()))
        .collect();
    let rows = payloads(connection, &events, read).await?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut event_ids = Vec::with_capacity(rows.len());
    let mut kinds = Vec::with_capacity(rows.len());
    let mut subscribers = Vec::with_capacity(rows.len());
    let mut bodies = Vec::with_capacity(rows.len());
    for row in rows {
        event_ids.push(Uuid::new_v4());
        kinds.push(row.kind.as_str());
        subscribers.push(row.subscriber_id);
        bodies.push(row.payload.to_string());
    }
    sqlx::query(
        "INSERT INTO webhook_deliveries \
             (id, endpoint_id, event_id, event_type, subscriber_id, payload) \
         SELECT gen_random_uuid(), e.id, new.event_id, new.kind, new.subscriber_id, \
                new.payload::jsonb \
         FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[]) \
              AS new (event_id, kind, subscriber_id, payload) \
         JOIN webhook_endpoints e ON e.enabled AND new.kind = ANY(e.events) \
         FOR KEY SHARE OF e",
    )
    .bind(&event_ids)
    .bind(&kinds)
    .bind(&subscribers)
    .bind(&bodies)
    .execute(connection)
    .await?;
    Ok(())
}

/// An event ready to be queued: its body, and whom it is about.
struct Payload {
    kind: EventType,
    subscriber_id: Option<Uuid>,
    payload: Value,
}

/// The bodies of `events`, their data read by `read`. An event whose
/// subject is not there (an address that is nobody's, an issue deleted
/// since) is dropped.
async fn payloads(
    connection: &mut PgConnection,
    events: &[&Event],
    read: impl AsyncFnOnce(&mut PgConnection, &[Uuid], &[String]) -> Result<Vec<Subject>, sqlx::Error>,
) -> Result<Vec<Payload>, sqlx::Error> {
    let mut ids = Vec::new();
    let mut addresses = Vec::new();
    for event in events {
        match &event.about {
            About::Subscriber(id) | About::Issue(id) => ids.push(*id),
            About::Address(address) => addresses.push(address.clone()),
            About::Erased(_) => {}
        }
    }
    let subjects = if ids.is_empty() && addresses.is_empty() {
        Vec::new()
    } else {
        read(connection, &ids, &addresses).await?
    };
    let by_id = |id: &Uuid| subjects.iter().find(|s| s.id == *id);
    let timestamp = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let (subscriber_id, data) = match &event.about {
            About::Subscriber(id) => match by_id(id) {
                Some(s) => (Some(s.id), s.data.0.clone()),
                None => continue,
            },
            About::Address(address) => {
                match subjects
                    .iter()
                    .find(|s| s.address.as_deref() == Some(address))
                {
                    Some(s) => (Some(s.id), s.data.0.clone()),
                    None => continue,
                }
            }
            About::Erased(id) => (Some(*id), json!({ "id": id })),
            About::Issue(id) => match by_id(id) {
                Some(s) => (None, s.data.0.clone()),
                None => continue,
            },
        };
        let mut data = match data {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        data.extend(event.extra.clone());
        out.push(Payload {
            kind: event.kind,
            subscriber_id,
            payload: json!({
                "type": event.kind.as_str(),
                "timestamp": timestamp,
                "data": data,
            }),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_parses_back_from_its_name() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Ok(kind), "{kind:?}");
        }
        assert!(EventType::parse("subscriber.deleted").is_err());
    }
}
