//! Outgoing webhooks as the third source of the delivery engine
//! ([`crate::delivery::engine`]), beside the outbox and the campaigns: a
//! claim takes up to a batch of due deliveries under a lease, signs each
//! ([`super::signing`]), and the engine makes the calls through [`Calls`],
//! the guarded client ([`super::client::HookClient`]) as a carrier. Each
//! outcome is recorded under the claim: delivered, retried after the next
//! wait of `outgoing_webhooks.retry_delays_seconds`, or given up.
//!
//! A worker killed mid-call records nothing: its claims lapse and another
//! worker sends those deliveries again, under the same event id, after the
//! wait a failed attempt would have earned (the claim counts the attempt:
//! see [`deliveries::claim_due`]). That is the at-least-once promise; the
//! receiver drops repeats by `webhook-id`. A call a living worker did not
//! make is handed back uncounted.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::configuration::OutgoingWebhookSettings;
use crate::db::{self, Db};
use crate::delivery::answer::{Answer, Code};
use crate::delivery::engine::{self, Batch, Carrier, Engine, Source, Turn};
use crate::metrics::{Metrics, WebhookCall};

use super::client::{self, EndpointUrl, HookClient, UrlError};
use super::deliveries::{self, Claimed, Failed};
use super::events::CHANNEL;
use super::signing::{self, Secret};

/// The webhook workers: the engine over the deliveries, calling out through
/// the guarded client.
pub type WebhookWorker = Engine<WebhookSource, Calls>;

/// One signed call, as it goes on the wire.
pub struct Call {
    pub url: EndpointUrl,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` and the
    /// content type.
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// A delivery of a batch, as every write names it.
pub struct Held {
    id: Uuid,
    claim: Uuid,
    endpoint_id: Uuid,
    /// Attempts so far, this one included.
    attempts: i32,
}

impl Held {
    fn pair(&self) -> deliveries::Held {
        (self.id, self.claim)
    }
}

/// Why a stored endpoint cannot be called as it is; fixed text.
const UNUSABLE_ENDPOINT: &str = "the endpoint's URL or secret is not one the service can use";

/// The deliveries, as the engine claims from them and records into them.
pub struct WebhookSource {
    db: Db,
    settings: OutgoingWebhookSettings,
    metrics: Metrics,
}

/// Why a claimed delivery cannot be called as its endpoint is stored.
enum Unusable {
    /// The URL names an internal address outright.
    Address,
    /// Any other reason: a URL or a secret the service cannot use.
    Other,
}

impl WebhookSource {
    pub fn new(db: Db, settings: OutgoingWebhookSettings, metrics: Metrics) -> Self {
        Self {
            db,
            settings,
            metrics,
        }
    }

    /// Signs the claimed delivery, or says why it cannot be sent.
    fn call(&self, claimed: &Claimed) -> Result<Call, Unusable> {
        let url = EndpointUrl::parse(&claimed.url, self.settings.allow_private_addresses).map_err(
            |e| match e {
                UrlError::AddressNotAllowed => Unusable::Address,
                _ => Unusable::Other,
            },
        )?;
        let secret = Secret::parse(&claimed.secret).map_err(|_| Unusable::Other)?;
        let id = claimed.event_id.to_string();
        let timestamp = Utc::now().timestamp();
        let body = Bytes::from(claimed.payload.clone().into_bytes());
        // The client sets the content type itself.
        let headers = signing::headers(&secret, &id, timestamp, &body).to_vec();
        Ok(Call { url, headers, body })
    }

    async fn write<T>(
        &self,
        what: &str,
        write: impl for<'c> Fn(
            &'c mut sqlx::PgConnection,
        ) -> futures::future::BoxFuture<'c, Result<T, sqlx::Error>>,
    ) -> Option<T> {
        engine::record(
            &self.db,
            self.settings.send_loop().claim_timeout(),
            what,
            write,
        )
        .await
    }

    /// A failed attempt: again after the next wait, or given up when no
    /// wait is left. `retry_after` (the receiver's `Retry-After`) can only
    /// lengthen the wait. `address_refused`: the guard refused the
    /// endpoint's address, which the metrics count apart.
    async fn failed(
        &self,
        held: Held,
        (code, error): (Option<i32>, String),
        retry_after: Option<Duration>,
        address_refused: bool,
    ) {
        let retry_in = self
            .settings
            .retry_delay(held.attempts)
            .map(|delay| delay.max(retry_after.unwrap_or_default()));
        // Counted whether or not the claim still held for the record: the
        // attempt was made either way.
        self.metrics.outgoing_webhook_call(match retry_in {
            _ if address_refused => WebhookCall::address_refused,
            Some(_) => WebhookCall::retrying,
            None => WebhookCall::given_up,
        });
        let disable_after = self.settings.disable_after();
        let pair = held.pair();
        let endpoint = held.endpoint_id;
        let outcome = self
            .write("record a failed webhook call", move |conn| {
                let error = error.clone();
                Box::pin(async move {
                    deliveries::mark_failed_attempt(
                        conn,
                        pair,
                        endpoint,
                        (code, &error),
                        retry_in,
                        disable_after,
                    )
                    .await
                })
            })
            .await;
        match outcome {
            Some(Failed::GaveUp) => tracing::warn!(
                delivery_id = %held.id,
                attempts = held.attempts,
                "Webhook delivery given up"
            ),
            Some(Failed::Lost) => tracing::warn!(
                delivery_id = %held.id,
                "A webhook delivery's claim lapsed before its outcome was recorded; another \
                 worker's outcome stands"
            ),
            Some(Failed::Retried) | None => {}
        }
    }
}

impl Source for WebhookSource {
    type Claim = ();
    type Key = Held;
    type Message = Call;
    const NAME: &'static str = "webhooks";
    const CHANNEL: &'static str = CHANNEL;
    const PAUSES_ON_FULL_SCHEDULE: bool = false;

    async fn claim(&self, _stop: &CancellationToken) -> Result<Turn<Self>, db::Error> {
        let send_loop = self.settings.send_loop();
        let send_by = WebhookWorker::send_by(&send_loop, self.settings.call_time());
        let lease = send_loop.claim_timeout();
        let batch = self.settings.batch_size.max(1);
        let delays = self.settings.retry_delays_seconds.clone();
        let claimed = self
            .db
            .bounded(move |conn| {
                let delays = delays.clone();
                Box::pin(async move { deliveries::claim_due(conn, lease, batch, &delays).await })
            })
            .await?;
        if claimed.is_empty() {
            return Ok(Turn::Idle);
        }
        let mut messages = Vec::with_capacity(claimed.len());
        let mut unusable = false;
        for delivery in claimed {
            let held = Held {
                id: delivery.id,
                claim: delivery.claim_id,
                endpoint_id: delivery.endpoint_id,
                attempts: delivery.attempts,
            };
            match self.call(&delivery) {
                Ok(call) => messages.push((held, call)),
                Err(why) => {
                    unusable = true;
                    let failure = (None, UNUSABLE_ENDPOINT.to_owned());
                    let address = matches!(why, Unusable::Address);
                    self.failed(held, failure, None, address).await
                }
            }
        }
        if messages.is_empty() {
            return Ok(if unusable { Turn::Worked } else { Turn::Idle });
        }
        Ok(Turn::Batch(Batch {
            claim: (),
            messages,
            send_by,
        }))
    }

    async fn record(&self, claim: (), outcomes: Vec<(Held, Option<Answer>)>) {
        let mut not_called = Vec::new();
        for (held, answer) in outcomes {
            match answer {
                Some(Answer::Sent { code, .. }) => {
                    self.metrics.outgoing_webhook_call(WebhookCall::delivered);
                    let pair = held.pair();
                    let endpoint = held.endpoint_id;
                    let code = http_status(code);
                    let kept = self
                        .write("record a delivered webhook", move |conn| {
                            Box::pin(deliveries::mark_delivered(conn, pair, endpoint, code))
                        })
                        .await;
                    if kept == Some(false) {
                        tracing::warn!(
                            delivery_id = %held.id,
                            "A delivered webhook's claim had lapsed; it may be sent again"
                        );
                    }
                }
                Some(Answer::Passing { error, retry_after }) => {
                    let code = http_status(error.code());
                    let address = client::is_address_refusal(&error);
                    self.failed(held, (code, error.to_string()), retry_after, address)
                        .await
                }
                Some(Answer::Refused(error)) => {
                    let code = http_status(error.code());
                    let address = client::is_address_refusal(&error);
                    self.failed(held, (code, error.to_string()), None, address)
                        .await
                }
                // One endpoint's 429 must not pause the others: the client
                // answers it as passing; should a throttle come through
                // anyway, it is a failed attempt like any other.
                Some(Answer::Throttled { retry_after }) => {
                    let error = "the endpoint asked to slow down (429)".to_owned();
                    self.failed(held, (Some(429), error), retry_after, false)
                        .await
                }
                // Not called (the batch ran out of claim time first): not
                // an attempt. Handed back rather than left to lapse, which
                // would count it and hold it back for a retry's wait.
                None => not_called.push(held),
            }
        }
        self.release(claim, not_called).await;
    }

    async fn release(&self, _claim: (), keys: Vec<Held>) {
        let held: Vec<deliveries::Held> = keys.iter().map(Held::pair).collect();
        if held.is_empty() {
            return;
        }
        self.write("release the webhook calls not made", move |conn| {
            let held = held.clone();
            Box::pin(async move { deliveries::release(conn, &held).await })
        })
        .await;
    }
}

fn http_status(code: Option<Code>) -> Option<i32> {
    match code? {
        Code::Http { status, .. } => Some(i32::from(status)),
        _ => None,
    }
}

/// The guarded client as the engine's carrier: the calls of a batch go
/// side by side, each to its own endpoint, each bounded by the client's
/// timeouts. A call not started by `send_by` is left for the next claim.
pub struct Calls {
    client: HookClient,
}

impl Calls {
    pub fn new(client: HookClient) -> Self {
        Self { client }
    }
}

impl Carrier<Call> for Calls {
    async fn send(&self, messages: &[&Call], send_by: Instant) -> Vec<Option<Answer>> {
        join_all(messages.iter().map(|call| async move {
            if Instant::now() >= send_by {
                return None;
            }
            let headers: Vec<(&str, String)> = call
                .headers
                .iter()
                .map(|(name, value)| (*name, value.clone()))
                .collect();
            Some(
                self.client
                    .post(&call.url, &headers, call.body.clone())
                    .await,
            )
        }))
        .await
    }
}
