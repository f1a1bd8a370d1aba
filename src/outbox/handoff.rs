//! The short way from a transaction to a delivery task in the same process.
//!
//! In a process that runs delivery workers, an email is inserted already
//! claimed by this process (for the claim timeout, the attempt counted) and,
//! once the transaction commits, passed over an in-process queue. No worker
//! anywhere claims it meanwhile, so the claim that every message would
//! otherwise need (an `UPDATE`, and the wake-ups around it) is spared for
//! nearly every email. Nothing is lost if the process dies with messages
//! queued: their claims lapse and any worker sends them, as for a worker that
//! died.
//!
//! A message goes the long way (inserted unclaimed, workers woken by the
//! doorbell) when delivery does not run in this process or the queue is full.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::delivery::engine::Queued;
use crate::emails::Email;
use crate::outbox::store::Message;
use crate::outbox::worker::Held;

/// A message passed over, and the last moment it may still be sent.
pub(super) type Handed = Queued<Held, Email>;

/// The sending side of the queue.
#[derive(Clone)]
pub(super) struct Handoff {
    queue: mpsc::Sender<Handed>,
    lease: Duration,
    /// Longest a send can take: a message must start out at least this long
    /// before its claim lapses, or another worker could send it too.
    send_time: Duration,
}

impl Handoff {
    /// A queue of `capacity` messages, inserted with claims of `lease`.
    /// `send_time` is the email client's timeout; it must be shorter than
    /// `lease`.
    pub fn new(
        capacity: usize,
        lease: Duration,
        send_time: Duration,
    ) -> (Self, mpsc::Receiver<Handed>) {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        let handoff = Self {
            queue,
            lease,
            send_time,
        };
        (handoff, receiver)
    }

    /// Takes a place in the queue, if there is one, for an email about to be
    /// inserted. The claim the database records runs from the insert, later
    /// than this moment, so the deadline computed here is never later than
    /// the real one.
    pub fn reserve(&self) -> Option<Place> {
        let permit = self.queue.clone().try_reserve_owned().ok()?;
        Some(Place {
            permit,
            send_by: Instant::now() + self.lease.saturating_sub(self.send_time),
            lease: self.lease,
        })
    }
}

/// A reserved place in the queue. Dropped unused (the transaction rolled
/// back), it is given back.
pub(super) struct Place {
    permit: mpsc::OwnedPermit<Handed>,
    send_by: Instant,
    pub lease: Duration,
}

impl Place {
    /// Passes the committed message over.
    pub fn send(self, message: Message) {
        self.permit.send(Queued {
            key: Held::from(&message),
            message: message.email,
            send_by: self.send_by,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SubscriberEmail;
    use crate::emails::EmailContent;
    use uuid::Uuid;

    fn message() -> Message {
        Message {
            id: Uuid::new_v4(),
            claim: Uuid::new_v4(),
            attempts: 1,
            email: Email {
                to: SubscriberEmail::parse("ursula@example.com").unwrap(),
                content: EmailContent {
                    subject: "Hello".into(),
                    html_body: "<p>Hello</p>".into(),
                    text_body: "Hello".into(),
                },
                message_stream: "outbound".into(),
                delivery: None,
                outbox_id: None,
                unsubscribe: None,
            },
        }
    }

    const LEASE: Duration = Duration::from_secs(60);
    const SEND_TIME: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_reserved_place_carries_the_message_and_a_deadline_before_the_claim_lapses() {
        let (handoff, mut queue) = Handoff::new(1, LEASE, SEND_TIME);

        let place = handoff.reserve().expect("the queue has room");
        assert_eq!(place.lease, LEASE);
        let message = message();
        let id = message.id;
        place.send(message);

        let handed = queue.try_recv().expect("nothing was handed over");
        assert_eq!(handed.key.id(), id);
        assert!(handed.send_by <= Instant::now() + LEASE - SEND_TIME);
    }

    #[tokio::test]
    async fn with_the_queue_full_there_is_no_place() {
        let (handoff, _queue) = Handoff::new(1, LEASE, SEND_TIME);

        let _holds_the_only_place = handoff.reserve();

        assert!(handoff.reserve().is_none());
    }

    #[tokio::test]
    async fn a_place_dropped_unused_is_given_back() {
        let (handoff, _queue) = Handoff::new(1, LEASE, SEND_TIME);

        drop(handoff.reserve());

        assert!(handoff.reserve().is_some());
    }
}
