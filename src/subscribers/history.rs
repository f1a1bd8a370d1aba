//! Whether an address has been here before: what decides if opening a
//! confirmation link may confirm on its own, or only shows the button.
//!
//! Link scanners open every link in an email, so opening a link is no one's
//! act. For a first sign-up that is tolerable where the settings allow it
//! (the person just typed their address into the form). For an address that
//! left, was suppressed or was erased it is not: anyone can type that
//! address into the form, and the scanner would bring its owner back. So an
//! address with any such past confirms only by the button.
//!
//! The past is read from everything that keeps it, since no one place does:
//! * the subscriber's own row: unsubscribed, or confirmed once (a row in
//!   another letter case is this row: addresses are unique whatever their
//!   case);
//! * the suppression list, by the keyed hash of the address and of its
//!   mailbox (lower case, no `+tag`): it outlives the subscriber's erasure
//!   and the retention job's deletion of an unconfirmed row;
//! * another subscriber row whose address is this one's mailbox: someone
//!   who left as `ada@example.com` and is signed up as
//!   `ada+news@example.com`;
//! * `former_addresses`, which this module owns: the keyed hash of the
//!   mailbox of everyone who unsubscribed or was erased
//!   ([`remember_departure`]). It catches every other spelling of one
//!   mailbox (`ada+a@` gone, `ada+b@` or `Ada@` signed up; for Gmail, dots
//!   too), and outlives an erasure, which keeps nothing else of someone who
//!   never left. It holds only hashes under the service's key, which no one
//!   can turn back into an address.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::SubscriberEmail;
use crate::keys::Keys;
use crate::subscribers;

/// Whether `subscriber_id`'s address was unsubscribed, confirmed before,
/// suppressed or erased, in any spelling this can tell. A subscriber who is
/// not there (erased meanwhile) has nothing to confirm: `true`, so that
/// nothing is confirmed without the button.
#[tracing::instrument(name = "Look up the address's past", level = "debug", skip_all)]
pub async fn was_here_before(
    connection: &mut PgConnection,
    keys: &Keys,
    subscriber_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let address = subscribers::address_of(connection, subscriber_id).await?;
    let Some(address) = address else {
        return Ok(true);
    };
    let mailbox = mailbox_of(&address);
    let mailbox_hash = keys.address_hash(&mailbox);
    let hashes = [keys.address_hash(&address), mailbox_hash.clone()];
    sqlx::query_scalar(
        "SELECT s.status = 'unsubscribed' \
                OR s.unsubscribed_at IS NOT NULL \
                OR s.confirmed_at IS NOT NULL \
                OR EXISTS (SELECT 1 FROM suppressions WHERE address_hash = ANY($2)) \
                OR EXISTS (SELECT 1 FROM former_addresses WHERE mailbox_hash = $4) \
                OR EXISTS (SELECT 1 FROM subscriptions o \
                           WHERE lower(o.email) = $3 AND o.id <> s.id) \
         FROM subscriptions s WHERE s.id = $1",
    )
    .bind(subscriber_id)
    .bind(&hashes[..])
    .bind(&mailbox)
    .bind(&mailbox_hash)
    .fetch_optional(connection)
    .await
    .map(|past: Option<bool>| past.unwrap_or(true))
}

/// Remembers that `address`'s mailbox was here and left (an unsubscribe,
/// an erasure), by its keyed hash only. In the caller's transaction, so
/// that it is remembered exactly when the departure happened.
pub async fn remember_departure(
    connection: &mut PgConnection,
    keys: &Keys,
    address: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO former_addresses (mailbox_hash) VALUES ($1) \
         ON CONFLICT (mailbox_hash) DO UPDATE SET left_at = now()",
    )
    .bind(keys.address_hash(&mailbox_of(address)))
    .execute(connection)
    .await?;
    Ok(())
}

/// Whether `address`'s mailbox unsubscribed or was erased before, in any
/// spelling ([`remember_departure`]).
pub async fn left_before(
    connection: &mut PgConnection,
    keys: &Keys,
    address: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM former_addresses WHERE mailbox_hash = $1)")
        .bind(keys.address_hash(&mailbox_of(address)))
        .fetch_one(connection)
        .await
}

/// The mailbox a stored address delivers to. Every stored address was
/// parsed at sign-up; one that no longer parses (stored by an older
/// release) is compared in lower case.
fn mailbox_of(address: &str) -> String {
    match SubscriberEmail::parse(address) {
        Ok(email) => email.mailbox().as_ref().to_owned(),
        Err(_) => address.to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::mailbox_of;

    #[test]
    fn a_tagged_address_in_any_case_has_the_untagged_lower_case_mailbox() {
        for (address, mailbox) in [
            ("ada@example.com", "ada@example.com"),
            ("Ada+News@Example.com", "ada@example.com"),
            ("not an address", "not an address"),
        ] {
            assert_eq!(mailbox_of(address), mailbox, "{address}");
        }
    }
}
