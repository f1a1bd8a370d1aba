//! Delivery: one engine for every message the service sends, emails and
//! webhook calls alike.
//!
//! - [`engine`]: the send loop. Sources (the outbox, the campaign ledger,
//!   the webhook calls) say how to claim a batch and record its outcomes;
//!   a carrier says how one kind of message is sent; the engine claims,
//!   waits for the carrier's booking, sends and records, the same way for
//!   each.
//! - [`mail`]: the carrier of emails: each stream's throttle, then its
//!   providers with failover. Webhook calls have theirs in
//!   [`crate::outgoing_webhooks`].
//! - [`answer`]: what a provider's (or an endpoint's) answer means for
//!   each message.
//! - [`provider`]: what a provider is; [`postmark`] and [`smtp`] send,
//!   and [`inbox`] keeps each email in the database for local runs.
//! - [`failover`]: a stream's providers in order, each behind a circuit.
//! - [`throttle`]: the fleet's sending rate per stream, kept in Redis.

pub mod answer;
pub mod engine;
pub mod failover;
pub mod inbox;
pub mod mail;
pub mod postmark;
pub mod provider;
pub mod smtp;
pub mod throttle;

use std::sync::Arc;

use crate::configuration::{DatabaseSettings, EmailBackend, EmailClientSettings};
use crate::db::Db;
use crate::domain::Newsletter;
use crate::metrics::Metrics;
use failover::{Breaker, Circuit, Providers};
use postmark::{EmailClient, Sender};
use provider::Provider;

/// The inbox's pool: the outbox's workers and the campaign senders may
/// each hand it a batch at once. Opened on first use.
const INBOX_CONNECTIONS: u32 = 4;

/// Which providers each message stream goes through.
#[derive(Debug, Clone)]
pub struct Routes {
    transactional: Providers,
    broadcast: Providers,
    broadcast_stream: String,
}

impl Routes {
    /// The configured providers of both streams, each built once with one
    /// circuit, which both streams share. The inbox keeps its emails in
    /// `database`, on a small pool of its own.
    pub fn build(
        settings: &EmailClientSettings,
        database: &DatabaseSettings,
        newsletter: &Newsletter,
        metrics: &Metrics,
    ) -> Result<Self, anyhow::Error> {
        if let Some(backend) = &settings.backend {
            // Both may be set while a fleet moves from one release to the
            // next (the older reads only `backend`): fine when they agree.
            let agrees = settings.providers.len() == 1
                && format!("{:?}", settings.providers[0]).eq_ignore_ascii_case(backend.trim());
            if !agrees {
                anyhow::bail!(
                    "email_client.backend is now email_client.providers, a list: set \
                     APP_EMAIL_CLIENT__PROVIDERS={backend} instead of APP_EMAIL_CLIENT__BACKEND"
                );
            }
        }
        let from = sender(settings, newsletter)?;
        let mut built: Vec<(EmailBackend, Arc<Circuit>)> = Vec::new();
        let mut providers = |list: &[EmailBackend]| -> Result<Vec<Arc<Circuit>>, anyhow::Error> {
            let mut chosen = Vec::with_capacity(list.len());
            for backend in list {
                if let Some((_, circuit)) = built.iter().find(|(b, _)| b == backend) {
                    chosen.push(circuit.clone());
                    continue;
                }
                let provider: Arc<dyn Provider> = match backend {
                    EmailBackend::Inbox => Arc::new(inbox::InboxProvider::new(
                        Db::connect_lazy(database, INBOX_CONNECTIONS),
                        from.clone(),
                        database.acquire_timeout() + database.work_timeout(),
                    )),
                    EmailBackend::Postmark => Arc::new(
                        postmark_client(settings, from.clone())?.with_metrics(metrics.clone()),
                    ),
                    EmailBackend::Smtp => {
                        let smtp = settings.smtp.as_ref().ok_or_else(|| {
                            anyhow::anyhow!(
                                "email_client.smtp is required by the smtp provider \
                                 (set APP_EMAIL_CLIENT__SMTP__HOST and the others)"
                            )
                        })?;
                        Arc::new(smtp::SmtpProvider::new(smtp, from.clone())?)
                    }
                };
                let circuit = Circuit::new(provider);
                built.push((*backend, circuit.clone()));
                chosen.push(circuit);
            }
            Ok(chosen)
        };
        let transactional = Providers::new(
            providers(&settings.providers)?,
            breaker(settings),
            metrics.clone(),
        )?;
        let broadcast = if settings.broadcast_providers.is_empty() {
            transactional.clone()
        } else {
            Providers::new(
                providers(&settings.broadcast_providers)?,
                breaker(settings),
                metrics.clone(),
            )?
        };
        Ok(Self {
            transactional,
            broadcast,
            broadcast_stream: settings.broadcast_stream.clone(),
        })
    }

    /// Every stream through `provider` alone, its circuit never opening:
    /// for tools and tests that drive the engine with a provider of their
    /// own.
    pub fn only(provider: Arc<dyn Provider>) -> Self {
        let breaker = failover::Breaker {
            open_after: u32::MAX,
            probe_after: std::time::Duration::from_secs(1),
        };
        let providers = Providers::new(vec![Circuit::new(provider)], breaker, Metrics::default())
            .expect("one provider is a list");
        Self {
            transactional: providers.clone(),
            broadcast: providers,
            broadcast_stream: String::new(),
        }
    }

    /// The providers of `stream`.
    pub fn of(&self, stream: &str) -> &Providers {
        if stream == self.broadcast_stream {
            &self.broadcast
        } else {
            &self.transactional
        }
    }

    /// The longest one call can take, whatever the stream and provider:
    /// what a claim must outlast.
    pub fn longest_call(&self) -> std::time::Duration {
        self.transactional
            .longest_call()
            .max(self.broadcast.longest_call())
    }

    /// The most emails one call may carry, whatever the stream.
    pub fn max_batch(&self) -> usize {
        self.transactional
            .max_batch()
            .min(self.broadcast.max_batch())
    }
}

/// The `From` of every email: `newsletter`'s sender name at
/// `email_client.sender_email`.
pub fn sender(
    settings: &EmailClientSettings,
    newsletter: &Newsletter,
) -> Result<Sender, anyhow::Error> {
    let address = settings
        .sender()
        .map_err(|e| anyhow::anyhow!("Invalid email_client.sender_email: {e}"))?;
    Ok(Sender::new(newsletter, &address))
}

/// The Postmark client, refusing to build without a token: better to fail
/// at start-up than on the first subscriber.
fn postmark_client(
    settings: &EmailClientSettings,
    sender: Sender,
) -> Result<EmailClient, anyhow::Error> {
    let token = settings.authorization_token.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "email_client.authorization_token is required by the postmark provider \
             (set APP_EMAIL_CLIENT__AUTHORIZATION_TOKEN)"
        )
    })?;
    EmailClient::postmark(settings.base_url.clone(), sender, token, settings.timeout())
}

/// When the configured providers' circuits open, and when they are probed.
fn breaker(settings: &EmailClientSettings) -> Breaker {
    Breaker {
        open_after: settings.open_circuit_after_failures.max(1),
        probe_after: settings.probe_after(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::tests::{configuration_dir, vars};
    use crate::configuration::{Environment, load};

    /// The providers `Routes::build` makes of these variables, by name.
    fn providers_from(pairs: &[(&str, &str)]) -> Result<Vec<&'static str>, String> {
        let settings = load(&configuration_dir(), Environment::Local, vars(pairs))
            .map_err(|e| e.to_string())?;
        let newsletter = settings.newsletter.parse().unwrap();
        Routes::build(
            &settings.email_client,
            &settings.database,
            &newsletter,
            &Metrics::default(),
        )
        .map(|routes| {
            routes
                .of(&settings.email_client.transactional_stream)
                .names()
        })
        .map_err(|e| e.to_string())
    }

    // A runtime: the inbox's pool is built, and opened lazily, on one.
    #[tokio::test]
    async fn providers_come_as_an_ordered_list_and_smtp_needs_its_settings() {
        let both = [
            ("APP_EMAIL_CLIENT__PROVIDERS", "postmark,smtp"),
            ("APP_EMAIL_CLIENT__AUTHORIZATION_TOKEN", "token"),
        ];
        let error = providers_from(&both).unwrap_err();
        assert!(error.contains("email_client.smtp"), "{error}");

        let with_smtp = [
            both[0],
            both[1],
            ("APP_EMAIL_CLIENT__SMTP__HOST", "mail.example.com"),
            ("APP_EMAIL_CLIENT__SMTP__PORT", "587"),
            ("APP_EMAIL_CLIENT__SMTP__TLS", "starttls"),
            ("APP_EMAIL_CLIENT__SMTP__POOL_SIZE", "4"),
            ("APP_EMAIL_CLIENT__SMTP__TIMEOUT_MILLISECONDS", "5000"),
        ];
        assert_eq!(providers_from(&with_smtp).unwrap(), ["postmark", "smtp"]);
        assert_eq!(
            providers_from(&[("APP_EMAIL_CLIENT__PROVIDERS", "inbox")]).unwrap(),
            ["inbox"]
        );
    }

    // A runtime: the inbox's pool is built, and opened lazily, on one.
    #[tokio::test]
    async fn the_old_backend_setting_is_refused_unless_it_names_the_one_provider_listed() {
        let error = providers_from(&[("APP_EMAIL_CLIENT__BACKEND", "postmark")]).unwrap_err();
        assert!(
            error.contains("APP_EMAIL_CLIENT__PROVIDERS=postmark"),
            "{error}"
        );
        assert_eq!(
            providers_from(&[
                ("APP_EMAIL_CLIENT__BACKEND", "inbox"),
                ("APP_EMAIL_CLIENT__PROVIDERS", "inbox"),
            ])
            .unwrap(),
            ["inbox"]
        );
    }

    #[test]
    fn the_postmark_backend_requires_a_token() {
        let settings = load(&configuration_dir(), Environment::Production, vars(&[])).unwrap();
        let newsletter = settings.newsletter.parse().unwrap();
        let mut email_client = settings.email_client;
        email_client.authorization_token = None;
        let from = sender(&email_client, &newsletter).unwrap();
        assert!(postmark_client(&email_client, from).is_err());
    }
}
