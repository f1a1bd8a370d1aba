//! The audit log: who did what to an admin account, and when. Rows name the
//! admin by id and by username; the username stays when the admin is
//! deleted (the id becomes NULL), so the log outlives the accounts it names.
//!
//! Record an action in the same transaction as the change it describes:
//! then the log has a row for every change that happened, and none for a
//! change that was rolled back.

use std::net::IpAddr;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Mentions;

/// What happened. Stored as the text of [`Action::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    AdminCreated,
    SignIn,
    SignInFailed,
    SignOut,
    PasswordChanged,
    PasswordReset,
    EmailChanged,
    TotpEnrolled,
    RecoveryCodeUsed,
    /// The subscriber list left the service as a file.
    SubscribersExported,
    /// Newsletter issues: published, paused, resumed, cancelled, and their
    /// failed deliveries queued again. The detail names the issue.
    IssuePublished,
    IssuePaused,
    IssueResumed,
    IssueCancelled,
    FailedDeliveriesRequeued,
    /// An issue put in the public archive, or taken out of it. The detail
    /// names the issue and its slug.
    IssueMadePublic,
    IssueMadePrivate,
    /// One subscriber's record left the service as a file, or the
    /// subscriber was erased. The detail names the subscriber by id only:
    /// the log outlives the erasure, and must not keep the address it
    /// removed.
    SubscriberExported,
    SubscriberErased,
    /// Custom attributes: a definition added or deleted (with every value
    /// for it), and a subscriber's values changed. The detail names the
    /// attributes and the subscriber by id, never a value: values may be
    /// personal, and the log outlives them.
    AttributeDefined,
    AttributeDeleted,
    SubscriberAttributesChanged,
    /// A segment saved, changed or deleted. The detail names it by id
    /// (and by name, when it is saved).
    SegmentCreated,
    SegmentUpdated,
    SegmentDeleted,
    /// A list made, changed, archived or brought back. The detail names
    /// the list by id and by name.
    ListCreated,
    ListUpdated,
    ListArchived,
    ListUnarchived,
    /// A list's welcome email written, changed or removed. The detail
    /// names the list by name and id, and which it was.
    ListWelcomeChanged,
    /// An import of subscribers started from the admin's upload. The
    /// detail names the file, the list, and whether the admin attested
    /// the readers' consent; never a row of the file.
    ImportStarted,
    /// An API token made or revoked, from the admin pages or the command
    /// line. The detail names the token and its scopes, never its secret.
    ApiTokenCreated,
    ApiTokenRevoked,
    /// An outgoing webhook endpoint registered, changed (its URL, events or
    /// description), enabled, disabled or deleted, or one of its deliveries
    /// sent again. The detail names the
    /// endpoint by id and URL, never its secret.
    WebhookEndpointCreated,
    WebhookEndpointUpdated,
    WebhookEndpointEnabled,
    WebhookEndpointDisabled,
    WebhookEndpointDeleted,
    WebhookDeliveryRetried,
    /// An issue draft saved, changed or deleted (publishing one records
    /// `IssuePublished`). The detail names it by title and id.
    DraftSaved,
    DraftChanged,
    DraftDeleted,
    /// A change made through the API with a write or publish scope. The
    /// actor is the token (`admin_id` NULL, `username` "token NAME"); the
    /// detail says what changed.
    ApiWrite,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::AdminCreated => "admin-created",
            Action::SignIn => "sign-in",
            Action::SignInFailed => "sign-in-failed",
            Action::SignOut => "sign-out",
            Action::PasswordChanged => "password-changed",
            Action::PasswordReset => "password-reset",
            Action::EmailChanged => "email-changed",
            Action::TotpEnrolled => "totp-enrolled",
            Action::RecoveryCodeUsed => "recovery-code-used",
            Action::SubscribersExported => "subscribers-exported",
            Action::IssuePublished => "issue-published",
            Action::IssuePaused => "issue-paused",
            Action::IssueResumed => "issue-resumed",
            Action::IssueCancelled => "issue-cancelled",
            Action::FailedDeliveriesRequeued => "failed-deliveries-requeued",
            Action::IssueMadePublic => "issue-made-public",
            Action::IssueMadePrivate => "issue-made-private",
            Action::SubscriberExported => "subscriber-exported",
            Action::SubscriberErased => "subscriber-erased",
            Action::AttributeDefined => "attribute-defined",
            Action::AttributeDeleted => "attribute-deleted",
            Action::SubscriberAttributesChanged => "subscriber-attributes-changed",
            Action::SegmentCreated => "segment-created",
            Action::SegmentUpdated => "segment-updated",
            Action::SegmentDeleted => "segment-deleted",
            Action::ListCreated => "list-created",
            Action::ListUpdated => "list-updated",
            Action::ListArchived => "list-archived",
            Action::ListUnarchived => "list-unarchived",
            Action::ListWelcomeChanged => "list-welcome-changed",
            Action::ImportStarted => "import-started",
            Action::ApiTokenCreated => "api-token-created",
            Action::ApiTokenRevoked => "api-token-revoked",
            Action::ApiWrite => "api-write",
            Action::DraftSaved => "draft-saved",
            Action::DraftChanged => "draft-changed",
            Action::DraftDeleted => "draft-deleted",
            Action::WebhookEndpointCreated => "webhook-endpoint-created",
            Action::WebhookEndpointUpdated => "webhook-endpoint-updated",
            Action::WebhookEndpointEnabled => "webhook-endpoint-enabled",
            Action::WebhookEndpointDisabled => "webhook-endpoint-disabled",
            Action::WebhookEndpointDeleted => "webhook-endpoint-deleted",
            Action::WebhookDeliveryRetried => "webhook-delivery-retried",
        }
    }
}

/// Who did it: an admin (id and username, and the address they came from),
/// or only the username typed at a failed sign-in, or the command line (the
/// admin the command acted on, and no address).
#[derive(Debug, Clone)]
pub struct Actor {
    pub admin_id: Option<Uuid>,
    pub username: Option<String>,
    pub client_ip: Option<IpAddr>,
}

/// The longest username kept in the log, in characters. A failed sign-in
/// may carry any text up to the body limit; no real username is longer
/// than 64, so a longer one is cut rather than stored whole.
const MAX_LOGGED_USERNAME: usize = 64;

/// Adds one row to the log.
///
/// A failed sign-in's username is whatever was typed, unparsed: control
/// characters in it are replaced (Postgres refuses NUL in `text`, and CR or
/// LF would forge lines wherever the log is printed), and it is cut to
/// [`MAX_LOGGED_USERNAME`] characters.
pub async fn record(
    conn: &mut PgConnection,
    actor: &Actor,
    action: Action,
    detail: &str,
) -> Result<(), sqlx::Error> {
    let username = actor.username.as_deref().map(|typed| {
        let mut kept: String = printable(typed).take(MAX_LOGGED_USERNAME).collect();
        if typed.chars().count() > MAX_LOGGED_USERNAME {
            kept.push('…');
        }
        kept
    });
    // sqlx encodes no `IpAddr` without the `ipnetwork` or `ipnet` feature:
    // the address goes as text and Postgres parses it.
    sqlx::query(
        "INSERT INTO audit_log (admin_id, username, action, detail, client_ip) \
         VALUES ($1, $2, $3, $4, $5::inet)",
    )
    .bind(actor.admin_id)
    .bind(username)
    .bind(action.as_str())
    .bind(printable(detail).collect::<String>())
    .bind(actor.client_ip.map(|ip| ip.to_string()))
    .execute(conn)
    .await?;
    Ok(())
}

/// Cuts every mention of a person out of the log, for their erasure: from
/// every row's detail (an admin's search, written by releases that kept
/// it), and from the username of failed sign-ins, which is whatever was
/// typed and may be a subscriber's address. The usernames of admins' own
/// actions are the admins' and stay. Returns how many rows changed.
///
/// The log has no index that could find text inside a detail: the sieve
/// reads it whole, which an erasure, rare and done by hand, can afford.
pub async fn erase_mentions(
    conn: &mut PgConnection,
    mentions: &Mentions,
) -> Result<u64, sqlx::Error> {
    type Row = (i64, Option<String>, String);
    let candidates: Vec<Row> = sqlx::query_as(
        "SELECT id, CASE WHEN action = $2 THEN username END, detail FROM audit_log \
         WHERE detail ILIKE ANY($1) OR (action = $2 AND username ILIKE ANY($1)) \
         FOR UPDATE",
    )
    .bind(mentions.like_patterns())
    .bind(Action::SignInFailed.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let mut changed = 0;
    for (id, typed, detail) in candidates {
        let username = typed.as_deref().and_then(|typed| mentions.scrub(typed));
        let detail = mentions.scrub(&detail);
        if username.is_none() && detail.is_none() {
            continue;
        }
        sqlx::query(
            "UPDATE audit_log SET username = COALESCE($2, username), \
             detail = COALESCE($3, detail) WHERE id = $1",
        )
        .bind(id)
        .bind(username)
        .bind(detail)
        .execute(&mut *conn)
        .await?;
        changed += 1;
    }
    Ok(changed)
}

/// `text` with each control character replaced by U+FFFD.
fn printable(text: &str) -> impl Iterator<Item = char> + '_ {
    text.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
}

/// One row of the log, as the dashboard shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Entry {
    pub at: chrono::DateTime<chrono::Utc>,
    pub username: Option<String>,
    pub action: String,
    pub detail: String,
    /// The address alone, without a prefix length (`host(client_ip)`).
    pub client_ip: Option<String>,
}

/// The `limit` most recent rows, newest first. Rows written by one
/// transaction share its `now()`; the identity column orders those.
pub async fn latest(conn: &mut PgConnection, limit: i64) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT at, username, action, detail, host(client_ip) AS client_ip \
         FROM audit_log ORDER BY at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::{Action, printable};

    #[test]
    fn every_action_has_its_own_name() {
        let all = [
            Action::AdminCreated,
            Action::SignIn,
            Action::SignInFailed,
            Action::SignOut,
            Action::PasswordChanged,
            Action::PasswordReset,
            Action::EmailChanged,
            Action::TotpEnrolled,
            Action::RecoveryCodeUsed,
            Action::SubscribersExported,
            Action::IssuePublished,
            Action::IssuePaused,
            Action::IssueResumed,
            Action::IssueCancelled,
            Action::FailedDeliveriesRequeued,
            Action::IssueMadePublic,
            Action::IssueMadePrivate,
            Action::SubscriberExported,
            Action::SubscriberErased,
            Action::AttributeDefined,
            Action::AttributeDeleted,
            Action::SubscriberAttributesChanged,
            Action::SegmentCreated,
            Action::SegmentUpdated,
            Action::SegmentDeleted,
            Action::ListCreated,
            Action::ListUpdated,
            Action::ListArchived,
            Action::ListUnarchived,
            Action::ListWelcomeChanged,
            Action::ImportStarted,
            Action::ApiTokenCreated,
            Action::ApiTokenRevoked,
            Action::WebhookEndpointCreated,
            Action::WebhookEndpointUpdated,
            Action::WebhookEndpointEnabled,
            Action::WebhookEndpointDisabled,
            Action::WebhookEndpointDeleted,
            Action::WebhookDeliveryRetried,
            Action::DraftSaved,
            Action::DraftChanged,
            Action::DraftDeleted,
            Action::ApiWrite,
        ];
        let mut names: Vec<_> = all.iter().map(Action::as_str).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len(), "{names:?}");
        assert_eq!(Action::SignInFailed.as_str(), "sign-in-failed");
    }

    #[test]
    fn control_characters_are_replaced_before_they_reach_the_log() {
        let kept: String = printable("ada\0\r\nforged").collect();
        assert_eq!(kept, "ada\u{FFFD}\u{FFFD}\u{FFFD}forged");
    }
}
