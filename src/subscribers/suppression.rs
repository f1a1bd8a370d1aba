//! The suppression list: addresses the service never mails again, whatever
//! asks it to (a campaign, a sign-up's confirmation, a notice).
//!
//! An entry is keyed by the address's keyed hash ([`Keys::address_hash`]) and
//! also holds the address itself, in lower case, while a subscriber with that
//! address exists: queries over many subscribers (a campaign's audience)
//! join on the address, and a subscriber's erasure clears it, leaving only
//! the hash, which still stops a new sign-up with that address.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::keys::Keys;

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The provider reported a hard bounce: the mailbox does not exist.
    HardBounce,
    /// Soft bounces in a row reached `webhooks.soft_bounce_limit`.
    SoftBounce,
    /// The recipient marked an email as spam.
    SpamComplaint,
    /// The provider suppressed the address on its side (the recipient
    /// unsubscribed through it, or an operator did in its dashboard).
    ProviderUnsubscribe,
    /// The subscriber unsubscribed here and was then erased: the hash is all
    /// that remains of them.
    Unsubscribed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::HardBounce => "hard_bounce",
            Reason::SoftBounce => "soft_bounce",
            Reason::SpamComplaint => "spam_complaint",
            Reason::ProviderUnsubscribe => "provider_unsubscribe",
            Reason::Unsubscribed => "unsubscribed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Reason::HardBounce,
            Reason::SoftBounce,
            Reason::SpamComplaint,
            Reason::ProviderUnsubscribe,
            Reason::Unsubscribed,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == raw)
    }

    /// How the admin pages say it.
    pub fn label(self) -> &'static str {
        match self {
            Reason::HardBounce => "hard bounce",
            Reason::SoftBounce => "repeated soft bounces",
            Reason::SpamComplaint => "spam complaint",
            Reason::ProviderUnsubscribe => "unsubscribed at the email provider",
            Reason::Unsubscribed => "unsubscribed, then erased",
        }
    }
}

/// An address's entry on the list.
#[derive(Debug, Clone)]
pub struct Suppression {
    pub reason: Reason,
    pub detail: Option<String>,
    pub changed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// Puts `address` on the list, or updates its entry when this change is
/// newer than the one recorded (`changed_at`, as the provider dates it), so
/// that a record delivered late never overwrites a later one. The address
/// itself is kept only if a subscriber has it, and no other entry holds it:
/// two spellings can hash apart (Rust and Postgres lower-case some letters
/// differently) and still be one address to the database. Returns whether
/// the entry was written.
pub async fn suppress(
    conn: &mut PgConnection,
    keys: &Keys,
    address: &str,
    reason: Reason,
    detail: Option<&str>,
    changed_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let written = sqlx::query(
        "INSERT INTO suppressions (address_hash, email, reason, detail, changed_at) \
         VALUES ($1, \
                 (SELECT lower(s.email) FROM subscriptions s \
                  WHERE lower(s.email) = lower($2) \
                    AND NOT EXISTS (SELECT 1 FROM suppressions x \
                                    WHERE x.email = lower($2) AND x.address_hash <> $1)), \
                 $3, $4, $5) \
         ON CONFLICT (address_hash) DO UPDATE \
         SET reason = EXCLUDED.reason, detail = EXCLUDED.detail, \
             changed_at = EXCLUDED.changed_at, \
             email = COALESCE(EXCLUDED.email, suppressions.email) \
         WHERE suppressions.changed_at < EXCLUDED.changed_at",
    )
    .bind(keys.address_hash(address))
    .bind(address)
    .bind(reason.as_str())
    .bind(detail)
    .bind(changed_at)
    .execute(conn)
    .await?;
    Ok(written.rows_affected() > 0)
}

/// Takes `address` off the list if its entry is older than `changed_at`
/// (the provider reactivated it). Returns whether an entry was removed.
pub async fn lift(
    conn: &mut PgConnection,
    keys: &Keys,
    address: &str,
    changed_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let lifted =
        sqlx::query("DELETE FROM suppressions WHERE address_hash = $1 AND changed_at < $2")
            .bind(keys.address_hash(address))
            .bind(changed_at)
            .execute(conn)
            .await?;
    Ok(lifted.rows_affected() > 0)
}

/// The entry for `address`, if it is on the list.
pub async fn find(
    conn: &mut PgConnection,
    keys: &Keys,
    address: &str,
) -> Result<Option<Suppression>, sqlx::Error> {
    type Row = (String, Option<String>, DateTime<Utc>, DateTime<Utc>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT reason, detail, changed_at, created_at FROM suppressions WHERE address_hash = $1",
    )
    .bind(keys.address_hash(address))
    .fetch_optional(conn)
    .await?;
    row.map(|(reason, detail, changed_at, created_at)| {
        let reason = Reason::parse(&reason).ok_or_else(|| {
            sqlx::Error::Decode(format!("`{reason}` is not a suppression reason").into())
        })?;
        Ok(Suppression {
            reason,
            detail,
            changed_at,
            created_at,
        })
    })
    .transpose()
}

/// SQL for what a message kept from a suppressed address says as its
/// error, `suppressed: <label>`, from the reason in `column`: for the
/// statements that skip suppressed recipients many at a time. `column` is
/// the caller's own SQL, never input.
pub fn skipped_because_sql(column: &str) -> String {
    let mut sql = format!("'suppressed: ' || CASE {column}");
    for reason in [
        Reason::HardBounce,
        Reason::SoftBounce,
        Reason::SpamComplaint,
        Reason::ProviderUnsubscribe,
        Reason::Unsubscribed,
    ] {
        sql.push_str(&format!(
            " WHEN '{}' THEN '{}'",
            reason.as_str(),
            reason.label()
        ));
    }
    sql.push_str(&format!(" ELSE {column} END"));
    sql
}

/// SQL that joins to each row of a statement the list's entry for the
/// address in `address` (the caller's own SQL, never input), as
/// `LEFT JOIN ... sup`: `sup.reason` is the entry's reason, and `sup.email`
/// the listed address, both NULL when the address is not listed. An
/// address is listed when an entry holds it in lower case; the unique index
/// on `email` answers one lookup per row. [`skipped_because_sql`] of
/// `sup.reason` says why a message to it is held back.
pub fn entry_join_sql(address: &str) -> String {
    format!("LEFT JOIN suppressions sup ON sup.email = lower({address})")
}

/// SQL that is true when the address in `address` (the caller's own SQL,
/// never input) is not on the list: the same match as
/// [`entry_join_sql`], as a condition, which Postgres reads as an
/// anti-join.
pub fn not_listed_sql(address: &str) -> String {
    format!("NOT EXISTS (SELECT 1 FROM suppressions sup WHERE sup.email = lower({address}))")
}

/// Which of these address hashes are on the list.
pub async fn listed_among(
    connection: &mut PgConnection,
    address_hashes: &[&[u8]],
) -> Result<Vec<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar("SELECT address_hash FROM suppressions WHERE address_hash = ANY($1)")
        .bind(address_hashes)
        .fetch_all(connection)
        .await
}

/// For an erasure: leaves the list holding the address's keyed hash and
/// reason only, if its owner must never be mailed again: they unsubscribed
/// (at `unsubscribed_at`; given an entry of their own if they have none),
/// or they already have one. Returns whether an entry remains.
pub async fn keep_only_the_hash(
    conn: &mut PgConnection,
    keys: &Keys,
    address: &str,
    unsubscribed_at: Option<DateTime<Utc>>,
) -> Result<bool, sqlx::Error> {
    let hash = keys.address_hash(address);
    if let Some(unsubscribed_at) = unsubscribed_at {
        // An existing entry (a complaint, a bounce) says more than this one
        // would: it stays as it is.
        sqlx::query(
            "INSERT INTO suppressions (address_hash, email, reason, changed_at) \
             VALUES ($1, NULL, $2, $3) ON CONFLICT (address_hash) DO NOTHING",
        )
        .bind(&hash)
        .bind(Reason::Unsubscribed.as_str())
        .bind(unsubscribed_at)
        .execute(&mut *conn)
        .await?;
    }
    // By hash and by address: whichever way an entry was written, the
    // address leaves the list with the subscriber, and so does the detail,
    // which the previous release filled with the provider's words.
    let entries = sqlx::query(
        "UPDATE suppressions SET email = NULL, detail = NULL \
         WHERE address_hash = $1 OR email = lower($2)",
    )
    .bind(&hash)
    .bind(address)
    .execute(&mut *conn)
    .await?;
    Ok(unsubscribed_at.is_some() || entries.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_as_written() {
        for reason in [
            Reason::HardBounce,
            Reason::SoftBounce,
            Reason::SpamComplaint,
            Reason::ProviderUnsubscribe,
            Reason::Unsubscribed,
        ] {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(Reason::parse("bounced"), None);
    }
}
