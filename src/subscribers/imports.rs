//! The subscriber store's side of an import ([`crate::imports`]): the merge
//! of a file's staged rows into `subscriptions`, `memberships` and
//! `confirmation_tokens`, set-based, in the caller's transaction. The
//! statements join the staging table to these tables, so they live here,
//! with the other SQL on them; the staging table itself is the import's
//! ([`STAGING`] names it).
//!
//! Every statement works on the whole file at once: the triggers that keep
//! the dashboard's and the lists' counts fire per statement, so a million
//! rows add a handful of ledger rows, not a million.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// The session's staging table the import fills: `(line, email,
/// email_lower, name, subscribed_at, confirmed_at, attributes,
/// address_hash, mailbox_hash, token)`.
pub const STAGING: &str = "import_staging";

/// The merge's verdict on each staged row, for the transaction's length:
/// `(line, email, name, token, subscriber_id, reason)`, `reason` NULL for
/// the rows taken.
pub const MERGED: &str = "import_merged";

/// The readers the merge left waiting for a confirmation, as SQL of `(n,
/// recipient, personalisation)` for [`crate::outbox::store::insert_spread`]:
/// `{{name}}` and `{{token}}` in the email are theirs.
pub const CONFIRMATIONS_SQL: &str = "SELECT row_number() OVER (ORDER BY line), email, \
     jsonb_build_object('name', name, 'token', token) FROM import_confirmations";

/// What the merge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    pub subscribers_added: u64,
    pub memberships_added: u64,
    pub already_on_list: u64,
    pub confirmations: u64,
    pub refused: u64,
}

/// How the merge treats the rows it takes.
pub struct MergeOptions {
    pub import_id: Uuid,
    pub list_id: Uuid,
    /// The admin attested that these readers consented: they are confirmed
    /// at once. Otherwise they wait for a confirmation by email.
    pub attested: bool,
    pub token_expires_at: DateTime<Utc>,
}

/// Merges the staged rows. A row is refused, with a reason, when its
/// address is on an earlier line of the file (compared in lower case, as
/// the unique index compares them), on the suppression list (by the keyed
/// hash of the address or of its mailbox), unsubscribed, off this list by
/// its own choice, or erased or unsubscribed in another spelling
/// (`former_addresses`). Of the others, a new address becomes a
/// subscriber; every one not yet on the list joins it, confirmed when
/// attested, else pending with a confirmation token (the email is the
/// caller's to queue from [`CONFIRMATIONS_SQL`]). A reader already on the
/// list is left as they are.
#[tracing::instrument(name = "Merge the staged rows", level = "info", skip_all)]
pub async fn merge(
    connection: &mut PgConnection,
    options: &MergeOptions,
) -> Result<Merged, sqlx::Error> {
    classify(connection, options.list_id).await?;
    // A reader asked to confirm signs up now, whatever the file says: the
    // retention job deletes sign-ups left unconfirmed for a while, counted
    // from `subscribed_at`, and an old time from the file would have it
    // delete them before their email had gone out.
    let subscribers_added = sqlx::query(
        "INSERT INTO subscriptions \
             (id, email, name, subscribed_at, status, confirmed_at, attributes, memberships_written) \
         SELECT subscriber_id, email, name, \
                CASE WHEN $1 THEN COALESCE(subscribed_at, now()) ELSE now() END, \
                CASE WHEN $1 THEN 'confirmed' ELSE 'pending_confirmation' END, \
                CASE WHEN $1 THEN COALESCE(confirmed_at, now()) END, \
                attributes, true \
         FROM import_merged WHERE reason IS NULL AND new_subscriber \
         ORDER BY lower(email) \
         ON CONFLICT DO NOTHING",
    )
    .bind(options.attested)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    // Joined to `subscriptions`: an address a reader signed up with
    // themselves between the classification and the insert above kept
    // their own row, and is skipped here rather than failing the file.
    // The readers added pending are kept aside for their tokens and emails.
    sqlx::query(
        "CREATE TEMP TABLE import_confirmations ( \
             line bigint, email text, name text, token text, subscriber_id uuid \
         ) ON COMMIT DROP",
    )
    .execute(&mut *connection)
    .await?;
    let (memberships_added, _pending): (i64, i64) = sqlx::query_as(
        "WITH added AS ( \
             INSERT INTO memberships (list_id, subscriber_id, status, joined_at, confirmed_at, import_id) \
             SELECT $1, s.id, CASE WHEN $3 THEN 'confirmed' ELSE 'pending' END, \
                    CASE WHEN $3 THEN COALESCE(m.subscribed_at, now()) ELSE now() END, \
                    CASE WHEN $3 THEN COALESCE(m.confirmed_at, now()) END, $2 \
             FROM import_merged m JOIN subscriptions s ON s.id = m.subscriber_id \
             WHERE m.reason IS NULL AND m.membership_status IS NULL \
             ON CONFLICT DO NOTHING \
             RETURNING subscriber_id, status \
         ), pending AS ( \
             INSERT INTO import_confirmations (line, email, name, token, subscriber_id) \
             SELECT m.line, m.email, m.name, m.token, m.subscriber_id \
             FROM added JOIN import_merged m USING (subscriber_id) \
             WHERE added.status = 'pending' AND m.reason IS NULL \
             RETURNING 1 \
         ) \
         SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM pending)",
    )
    .bind(options.list_id)
    .bind(options.import_id)
    .bind(options.attested)
    .fetch_one(&mut *connection)
    .await?;
    let already_on_list: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM import_merged WHERE reason IS NULL AND membership_status IS NOT NULL",
    )
    .fetch_one(&mut *connection)
    .await?;
    let refused: i64 =
        sqlx::query_scalar("SELECT count(*) FROM import_merged WHERE reason IS NOT NULL")
            .fetch_one(&mut *connection)
            .await?;
    let confirmations = store_tokens(connection, options).await?;
    Ok(Merged {
        subscribers_added,
        memberships_added: u64::try_from(memberships_added).unwrap_or_default(),
        already_on_list: u64::try_from(already_on_list).unwrap_or_default(),
        confirmations,
        refused: u64::try_from(refused).unwrap_or_default(),
    })
}

/// Builds [`MERGED`]: each staged row with the subscriber and membership
/// its address already has, and the reason it is refused, if it is.
async fn classify(connection: &mut PgConnection, list_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DROP TABLE IF EXISTS import_merged, import_confirmations")
        .execute(&mut *connection)
        .await?;
    sqlx::query(
        "CREATE TEMP TABLE import_merged ON COMMIT DROP AS \
         SELECT st.line, st.email, st.name, st.subscribed_at, st.confirmed_at, \
                st.attributes, st.token, \
                COALESCE(s.id, gen_random_uuid()) AS subscriber_id, \
                s.id IS NULL AS new_subscriber, \
                m.status AS membership_status, \
                CASE \
                  WHEN st.line <> first_value(st.line) OVER same \
                    THEN 'The address is on line ' || first_value(st.line) OVER same || ' already.' \
                  WHEN sup.address_hash IS NOT NULL OR supm.address_hash IS NOT NULL \
                    THEN 'The address is on the suppression list (it bounced, complained or \
unsubscribed): it is never mailed again.' \
                  WHEN s.status = 'unsubscribed' \
                    THEN 'The address unsubscribed: it is not subscribed again.' \
                  WHEN m.status = 'unsubscribed' \
                    THEN 'The address left this list: it is not put back on it.' \
                  WHEN s.id IS NULL AND fa.mailbox_hash IS NOT NULL \
                    THEN 'The address unsubscribed or was erased before: it is not subscribed again.' \
                END AS reason \
         FROM import_staging st \
         LEFT JOIN subscriptions s ON lower(s.email) = st.email_lower \
         LEFT JOIN memberships m ON m.list_id = $1 AND m.subscriber_id = s.id \
         LEFT JOIN suppressions sup ON sup.address_hash = st.address_hash \
         LEFT JOIN suppressions supm ON supm.address_hash = st.mailbox_hash \
         LEFT JOIN former_addresses fa ON fa.mailbox_hash = st.mailbox_hash \
         WINDOW same AS (PARTITION BY st.email_lower ORDER BY st.line)",
    )
    .bind(list_id)
    .execute(&mut *connection)
    .await?;
    // A table made by a statement has no statistics: without them, the
    // joins that follow are planned as if it held a handful of rows.
    sqlx::query("ANALYZE import_merged")
        .execute(connection)
        .await?;
    Ok(())
}

/// The confirmation tokens of the readers this import left pending on the
/// list, and the table their emails are read from.
async fn store_tokens(
    connection: &mut PgConnection,
    options: &MergeOptions,
) -> Result<u64, sqlx::Error> {
    let stored = sqlx::query(
        "INSERT INTO confirmation_tokens (token_hash, subscriber_id, expires_at) \
         SELECT sha256(convert_to(token, 'UTF8')), subscriber_id, $1 FROM import_confirmations",
    )
    .bind(options.token_expires_at)
    .execute(connection)
    .await?
    .rows_affected();
    Ok(stored)
}
