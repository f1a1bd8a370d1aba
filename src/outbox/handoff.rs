//! The short way from a handler to a delivery task in the same process.
//!
//! A handler that runs next to delivery workers inserts its email already
//! claimed by this process (for the claim timeout, the attempt counted) and,
//! once the transaction commits, passes it over an in-process queue. No
//! worker anywhere claims it meanwhile, so the claim that every message used
//! to need (an `UPDATE`, and the wake-ups around it) is spared for nearly
//! every email. Nothing is lost if the process dies with messages queued:
//! their claims lapse and any worker sends them, as for a worker that died.
//!
//! A message goes the long way (inserted unclaimed, workers woken by the
//! doorbell) when delivery does not run in this process or the queue is full.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::outbox::doorbell::Doorbell;
use crate::outbox::store::{ClaimedEmail, OutgoingEmail};

/// What the handlers hold.
#[derive(Clone)]
pub struct Handoff {
    queue: Option<mpsc::Sender<Handed>>,
    claim: Duration,
    /// Longest a send can take: a message must start out at least this long
    /// before its claim lapses, or another worker could send it too.
    send_time: Duration,
    doorbell: Doorbell,
}

/// The delivery side of the queue.
pub struct HandoffQueue(pub(super) mpsc::Receiver<Handed>);

/// A message passed over, and the last moment it may still be sent.
pub(super) struct Handed {
    pub email: ClaimedEmail,
    pub send_by: Instant,
}

impl Handoff {
    /// A queue of `capacity` messages, inserted with claims of `claim`.
    /// `send_time` is the email client's timeout; it must be shorter than
    /// `claim`.
    pub fn new(
        doorbell: Doorbell,
        capacity: usize,
        claim: Duration,
        send_time: Duration,
    ) -> (Self, HandoffQueue) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let handoff = Self {
            queue: Some(sender),
            claim,
            send_time,
            doorbell,
        };
        (handoff, HandoffQueue(receiver))
    }

    /// For a process without delivery workers: every message goes the long way.
    pub fn doorbell_only(doorbell: Doorbell) -> Self {
        Self {
            queue: None,
            claim: Duration::ZERO,
            send_time: Duration::ZERO,
            doorbell,
        }
    }

    /// Takes a place in the queue, if there is one, for an email about to be
    /// enqueued. Call it before the transaction starts: the claim the
    /// database records runs from the transaction's start, so the deadline
    /// computed here is never later than the real one.
    pub fn reserve(&self) -> Slot {
        let permit = self
            .queue
            .clone()
            .and_then(|queue| queue.try_reserve_owned().ok());
        Slot {
            permit,
            send_by: Instant::now() + self.claim.saturating_sub(self.send_time),
            claim: self.claim,
            doorbell: self.doorbell.clone(),
        }
    }
}

/// A reserved place, or the lack of one. Dropping it (the transaction
/// failed) gives the place back.
pub struct Slot {
    permit: Option<mpsc::OwnedPermit<Handed>>,
    send_by: Instant,
    claim: Duration,
    doorbell: Doorbell,
}

impl Slot {
    /// The claim to insert the email with; `None` to insert it unclaimed.
    pub fn claim(&self) -> Option<Duration> {
        self.permit.as_ref().map(|_| self.claim)
    }

    /// Call once the transaction that enqueued `email` as `id` has committed.
    pub fn committed(self, id: Uuid, email: OutgoingEmail) {
        match self.permit {
            Some(permit) => {
                permit.send(Handed {
                    email: ClaimedEmail {
                        id,
                        recipient: email.recipient.as_ref().to_owned(),
                        subject: email.subject,
                        html_body: Some(email.html_body),
                        text_body: Some(email.text_body),
                        message_stream: email.message_stream,
                        attempts: 1,
                    },
                    send_by: self.send_by,
                });
            }
            None => self.doorbell.ring(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SubscriberEmail;

    fn email() -> OutgoingEmail {
        OutgoingEmail {
            recipient: SubscriberEmail::parse("ursula@example.com").unwrap(),
            subject: "Hello".into(),
            html_body: "<p>Hello</p>".into(),
            text_body: "Hello".into(),
            message_stream: "outbound".into(),
        }
    }

    const CLAIM: Duration = Duration::from_secs(60);
    const SEND_TIME: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_reserved_message_is_claimed_and_arrives_on_the_queue() {
        let (handoff, HandoffQueue(mut queue)) =
            Handoff::new(Doorbell::default(), 1, CLAIM, SEND_TIME);

        let slot = handoff.reserve();
        assert_eq!(slot.claim(), Some(CLAIM));
        let id = Uuid::new_v4();
        slot.committed(id, email());

        let handed = queue.try_recv().expect("nothing was handed over");
        assert_eq!(handed.email.id, id);
        assert_eq!(handed.email.attempts, 1);
        assert!(handed.send_by <= Instant::now() + CLAIM - SEND_TIME);
    }

    #[tokio::test]
    async fn with_the_queue_full_a_message_goes_unclaimed_and_rings_the_doorbell() {
        let doorbell = Doorbell::default();
        let (handoff, _queue) = Handoff::new(doorbell.clone(), 1, CLAIM, SEND_TIME);

        let _holds_the_only_place = handoff.reserve();
        let slot = handoff.reserve();
        assert_eq!(slot.claim(), None);
        slot.committed(Uuid::new_v4(), email());

        tokio::time::timeout(Duration::from_millis(100), doorbell.rung())
            .await
            .expect("the doorbell was not rung");
    }

    #[tokio::test]
    async fn a_dropped_slot_gives_its_place_back() {
        let (handoff, _queue) = Handoff::new(Doorbell::default(), 1, CLAIM, SEND_TIME);

        drop(handoff.reserve());

        assert_eq!(handoff.reserve().claim(), Some(CLAIM));
    }
}
