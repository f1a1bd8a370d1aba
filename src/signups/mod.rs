//! Storing sign-ups: a pending subscriber (or the one already there with the
//! address), a confirmation token and the email for them, all in one
//! transaction ([`transaction`]), and the answer only once it has committed.
//! An address on the suppression list gets nothing stored and no email, with
//! the same answer.
//!
//! Sign-ups are written through a [`GroupCommit`]: those that arrive while
//! their worker thread's writers are busy share the next transaction. That
//! is all this module asks of it; how batches form, and how one sign-up that
//! Postgres refuses is kept from failing the others, is the wing's business.

mod transaction;

use std::sync::Arc;

use uuid::Uuid;

use crate::db::{self, Batched, Db, GroupCommit, GroupCommitLimits};
use crate::domain::{NewSubscriber, Newsletter, SubscriptionToken};
use crate::emails::{self, EmailContent};
use crate::keys::Keys;
use crate::metrics::{Metrics, Suppressed};
use crate::outbox::Outbox;
use crate::rate_limit::{RateLimiter, SubscriptionDecision};
use crate::subscribers::welcome::Letterhead;

/// Sign-ups a worker thread holds before new ones wait to be queued.
const QUEUE: usize = 1024;
/// Most sign-ups written in one transaction.
const MAX_BATCH: usize = 64;
/// Most bytes of email a batch carries. The outbox insert sends every email
/// of the batch in one message, and one larger than a TLS record (16 KiB)
/// leaves in more than one write. sqlx 0.9.0 does not set `TCP_NODELAY`, so
/// the second write waits for the first to be acknowledged, and Postgres,
/// still missing the rest of the message, delays that acknowledgement (up to
/// 40 ms on Linux). A typical confirmation is under 1 KiB.
const BATCH_BYTES: usize = 14 * 1024;
/// Bytes of an outbox row besides its email (id, lengths, stream, claim).
const ROW_BYTES: usize = 128;

/// What the sign-up emails need to know.
#[derive(Debug, Clone)]
pub struct SignupSettings {
    /// Named in every email.
    pub newsletter: Newsletter,
    pub base_url: String,
    pub token_lifetime: chrono::Duration,
    /// Message stream for confirmations and notices.
    pub message_stream: String,
    /// Hashes addresses to look them up on the suppression list.
    pub keys: Keys,
}

impl SignupSettings {
    /// What the welcome emails of the lists need: the same newsletter,
    /// links and stream as the confirmations.
    pub fn letterhead(&self) -> Letterhead {
        Letterhead {
            newsletter: self.newsletter.clone(),
            base_url: self.base_url.clone(),
            keys: self.keys.clone(),
            message_stream: self.message_stream.clone(),
        }
    }
}

/// One worker thread's way to store sign-ups.
pub struct Signups {
    writes: GroupCommit<SignUp, Stored>,
    settings: Arc<SignupSettings>,
}

/// What became of a stored sign-up.
#[derive(Debug)]
pub struct Stored {
    /// The pending subscriber who was sent a confirmation; `None` when the
    /// address was already confirmed and got a notice instead, or is
    /// suppressed and got nothing.
    pub subscriber_id: Option<Uuid>,
    /// The address is on the suppression list: nothing was stored or sent.
    pub suppressed: bool,
}

/// A sign-up on its way to the database.
struct SignUp {
    subscriber: NewSubscriber,
    /// The token and its email, used unless the address is confirmed.
    token: SubscriptionToken,
    confirmation: EmailContent,
    /// The address's key on the suppression list.
    address_hash: Vec<u8>,
}

impl Batched for SignUp {
    fn weight(&self) -> usize {
        ROW_BYTES + self.subscriber.email.as_ref().len() + self.confirmation.len()
    }
}

impl Signups {
    /// Starts `writers` writers on the calling HTTP worker thread, writing on
    /// connections of `db`; their email goes to `outbox`.
    pub fn start(db: Db, outbox: Outbox, settings: Arc<SignupSettings>, writers: usize) -> Self {
        let limits = GroupCommitLimits {
            writers,
            max_pieces: MAX_BATCH,
            max_weight: BATCH_BYTES,
            queue: QUEUE,
        };
        let write_settings = settings.clone();
        let writes = GroupCommit::start(db, limits, async move |transaction, sign_ups| {
            transaction::store(transaction, &outbox, &write_settings, sign_ups).await
        });
        Self { writes, settings }
    }

    /// Stores `subscriber` and returns once it has committed.
    pub async fn store(&self, subscriber: NewSubscriber) -> Result<Stored, db::Error> {
        // Nearly every sign-up is a new or pending address: its email is
        // rendered here, on the request's time, rather than by the writer.
        let token = SubscriptionToken::generate();
        let confirmation = emails::confirmation(
            &self.settings.newsletter,
            &self.settings.base_url,
            &subscriber.name,
            &token,
        );
        let address_hash = self.settings.keys.address_hash(subscriber.email.as_ref());
        self.writes
            .submit(SignUp {
                subscriber,
                token,
                confirmation,
                address_hash,
            })
            .await
    }

    /// Stores `subscriber` unless the address's limit refused it
    /// (`decision`, from the limiter's check; a client over its own limit
    /// is the caller's to refuse before), and counts what became of it. The
    /// one way the form, the page after unsubscribing and the API store a
    /// sign-up, so that each counts and refunds alike. `None` when the
    /// address was over its limit: nothing stored or sent.
    pub async fn store_within_limit(
        &self,
        limiter: &RateLimiter,
        metrics: &Metrics,
        decision: SubscriptionDecision,
        subscriber: NewSubscriber,
    ) -> Result<Option<Stored>, db::Error> {
        if decision != SubscriptionDecision::Allowed {
            metrics.signup_suppressed(Suppressed::address_limit);
            let suppressed_total = limiter.count_suppressed_email();
            tracing::warn!(
                suppressed_total,
                "Per-address email limit reached: nothing stored or sent"
            );
            return Ok(None);
        }
        let email = subscriber.email.clone();
        let stored = match self.store(subscriber).await {
            Ok(stored) => stored,
            Err(e) => {
                // When nothing was stored or sent, the address keeps its
                // budget, so that a person who retries after a 5xx still
                // gets their email. A commit that may have gone through
                // keeps it spent.
                if e.nothing_committed() {
                    limiter.refund_address(&email).await;
                }
                return Err(e);
            }
        };
        if stored.suppressed {
            metrics.signup_suppressed(Suppressed::suppression_list);
        } else {
            metrics.signup_stored();
        }
        Ok(Some(stored))
    }

    /// Sign-ups queued and not yet taken into a transaction.
    pub fn queued(&self) -> usize {
        self.writes.queued()
    }
}
