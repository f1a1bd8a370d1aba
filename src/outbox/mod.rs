//! The transactional outbox. Code that needs an email sent queues it with
//! [`Outbox::enqueue`] inside its own transaction; once that transaction
//! commits, the email will be delivered even if the email API is down at
//! that moment or the process dies. Nothing else is asked of the caller: the
//! email is handed to a delivery task in this process, or the workers
//! elsewhere are woken, by the transaction's commit itself.
//!
//! Delivery workers (the delivery engine over [`OutboxSource`]) claim due messages with `FOR UPDATE
//! SKIP LOCKED`, so any number of them across any number of replicas share
//! the table safely, send them, and record the outcome under their claim:
//! sent, retry later with backoff, or failed (kept whole, with the last
//! error, for an operator to send again with `newsletter outbox
//! requeue-failed`).
//!
//! An email is stored with its content, except the confirmations of an
//! import ([`store::insert_spread`]): one content in `email_contents` for a
//! million rows, each filled in per recipient when it is sent, and spread
//! over time at the broadcast stream's rate. (Newsletter issues travel
//! through the campaigns' ledger, not here.)
//!
//! Adding a kind of email takes a template in `src/templates/emails/`, a
//! function in [`crate::emails`] that renders it into an
//! [`crate::emails::EmailContent`], and a call to `enqueue` where it is caused.

mod backoff;
mod doorbell;
mod handoff;
pub mod store;
mod worker;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub(crate) use backoff::retry_delay;
pub use doorbell::CHANNEL;
pub use store::{
    LITERAL_BRACES, Markup, Personalisation, Requeued, personalise, personalise_with,
    requeue_failed,
};
pub use worker::{DeliveryWorker, OutboxSource};

use crate::db::Transaction;
use crate::db::wakeups::Notifier;
use crate::emails::Email;
pub use doorbell::Doorbell;
use handoff::Handoff;
use store::{Message, Start};

/// Where email goes. Cheap to clone; every clone feeds the same delivery.
#[derive(Clone)]
pub struct Outbox {
    /// Present when this process delivers email itself.
    handoff: Option<Handoff>,
    doorbell: Doorbell,
}

impl Outbox {
    /// The outbox of a serving process, and its background tasks, which stop
    /// once `stop` is cancelled and the email in flight is sent. With a
    /// `worker`, this process delivers email, its own first; without, it
    /// leaves delivery to workers elsewhere (`newsletter worker`). Either
    /// way workers in other processes are woken after each commit, through
    /// `notifier`.
    pub fn start(
        worker: Option<DeliveryWorker>,
        notifier: Notifier,
        stop: CancellationToken,
    ) -> (Self, JoinSet<()>) {
        let (doorbell, handoff, tasks) = match worker {
            Some(worker) => {
                let source = worker.source();
                // Room for a few batches: a full queue only sends email the
                // long way.
                let (handoff, queue) = Handoff::new(
                    4 * source.batch_size(),
                    source.claim_timeout(),
                    source.send_time(),
                );
                let doorbell = source.doorbell().clone();
                let mut tasks = worker.spawn(stop.clone());
                tasks.spawn(worker.deliver_queued(queue, stop.clone()));
                (doorbell, Some(handoff), tasks)
            }
            None => (Doorbell::new(notifier), None, JoinSet::new()),
        };
        (Self { handoff, doorbell }, tasks)
    }

    /// Queues `emails` in `transaction`. Once it commits they are on their
    /// way; if it does not, they never existed. One to an address on the
    /// suppression list is kept as failed, with the reason, and never sent.
    #[tracing::instrument(name = "Queue emails", level = "debug", skip_all, fields(emails = emails.len()))]
    pub async fn enqueue(
        &self,
        transaction: &mut Transaction<'_>,
        emails: Vec<Email>,
    ) -> Result<(), sqlx::Error> {
        let places: Vec<_> = emails
            .iter()
            .map(|_| self.handoff.as_ref().and_then(Handoff::reserve))
            .collect();
        let starts: Vec<Start> = places
            .iter()
            .map(|place| match place {
                Some(place) => Start::Claimed {
                    claim: Uuid::new_v4(),
                    lease: place.lease,
                },
                None => Start::Unclaimed,
            })
            .collect();
        let rows: Vec<(&Email, Start)> = emails.iter().zip(starts.iter().copied()).collect();
        let stored = store::insert(transaction, &rows).await?;
        let doorbell = self.doorbell.clone();
        transaction.after_commit(move || {
            let mut unclaimed = false;
            for (((email, place), start), stored) in
                emails.into_iter().zip(places).zip(starts).zip(stored)
            {
                match (place, start) {
                    // Stored as failed: its place is given back unused.
                    _ if stored.suppressed => {}
                    (Some(place), Start::Claimed { claim, .. }) => {
                        place.send(Message::new(stored.id, claim, 1, email))
                    }
                    _ => unclaimed = true,
                }
            }
            if unclaimed {
                doorbell.ring();
            }
        });
        Ok(())
    }
}
