//! A reader leaving: some lists, or everything. The one-click link of an
//! issue and the API's unsubscribe both run [`leave`], so that leaving the
//! last list is leaving everything, and leaving everything is remembered,
//! the same way whoever asks.

use uuid::Uuid;

use crate::db::Transaction;
use crate::keys::Keys;
use crate::subscribers::{history, memberships, record};

/// What a leaving did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    /// No subscriber has the id (erased, or never was): nothing to do.
    Nobody,
    /// Off the lists asked; still on others.
    Lists { address: String },
    /// Off everything: unsubscribed.
    Everything { address: String },
}

/// Takes subscriber `id` off `lists`, or off everything when `None` or
/// when those were their last lists, in the caller's transaction.
/// Everything means unsubscribed: their confirmation tokens go, and the
/// departure is remembered ([`history::remember_departure`]), so that a
/// sign-up under another spelling of the mailbox asks for the button.
pub async fn leave(
    transaction: &mut Transaction<'_>,
    keys: &Keys,
    id: Uuid,
    lists: Option<&[Uuid]>,
) -> Result<Left, sqlx::Error> {
    if let Some(lists) = lists {
        // The tokens, then the subscriber, as every change to both takes
        // them, so that none of them deadlocks and two leavings at once
        // count what the other left.
        record::lock_tokens(transaction, id).await?;
        let Some(subscriber) = record::lock(transaction, id).await? else {
            return Ok(Left::Nobody);
        };
        if memberships::leave(transaction, id, lists).await? > 0 {
            return Ok(Left::Lists {
                address: subscriber.email,
            });
        }
    }
    let Some(address) = record::unsubscribe(transaction, id).await? else {
        return Ok(Left::Nobody);
    };
    history::remember_departure(transaction, keys, &address).await?;
    Ok(Left::Everything { address })
}
