//! Builds the application: the database pools, the outbox and its delivery
//! workers, the routes and the HTTP server, and how they stop together.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing_actix_web::TracingLogger;

use crate::admin::cookies::SessionCookies;
use crate::admin::sessions::SessionStore;
use crate::admin::totp_keys::TotpKeys;
use crate::archive::Archive;
use crate::campaigns::IssueState;
use crate::campaigns::ledger;
use crate::campaigns::progress::ProgressFeed;
use crate::campaigns::sender::{CampaignSource, Sender};
use crate::configuration::{DatabaseSettings, OutgoingWebhookSettings, Settings, WebhookSettings};
use crate::db::wakeups::{Notifier, Wakeups};
use crate::db::{self, Db};
use crate::delivery::Routes;
use crate::delivery::inbox::LocalInbox;
use crate::delivery::mail::Mail;
use crate::delivery::throttle::{Throttle, Throttles};
use crate::emails::UnsubscribeLinks;
use crate::imports::Importer;
use crate::keys::Keys;
use crate::metrics::http::count_requests;
use crate::metrics::server::MetricsServer;
use crate::metrics::{DatabaseGauges, DatabaseState, IssueCounts, Metrics};
use crate::outbox::{self, DeliveryWorker, Doorbell, Outbox, OutboxSource};
use crate::outgoing_webhooks::client::{HookClient, HookClientSettings};
use crate::outgoing_webhooks::deliveries as webhook_deliveries;
use crate::outgoing_webhooks::source::{Calls, WebhookSource, WebhookWorker};
use crate::rate_limit::RateLimiter;
use crate::readiness;
use crate::retention::Retention;
use crate::routes::admin::{ImportUploads, PublishSettings};
use crate::routes::{self, FORM_BODY_LIMIT_BYTES, SubscriptionOptions};
use crate::signups::{SignupSettings, Signups};
use crate::subscribers::welcome::Welcomer;
use crate::telemetry::RequestSpan;
use crate::web::error::{ApiError, refusal_pages};

pub struct Application {
    port: u16,
    server: Server,
    /// Ends the pages' live streams: on a signal, or from a [`Stopper`].
    streams: CancellationToken,
    background: Background,
    metrics_server: MetricsServer,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, anyhow::Error> {
        // What the configuration can still refuse is read before anything
        // starts or binds a port.
        let newsletter = settings.newsletter.parse()?;
        let keys = Keys::derive(&settings.application.hmac_secret).map_err(anyhow::Error::msg)?;
        let metrics = metrics(&settings);
        let background = Background::start(&settings, &metrics, settings.delivery.run_in_server)?;
        // The pages' live streams end at SIGTERM, before the workers stop.
        let streams = background.stop.child_token();
        end_streams_on_signal(streams.clone());
        let progress = ProgressFeed::new(background.wakeups.clone(), streams.clone());
        let archive = Archive::new(&settings.application.base_url, newsletter.clone());
        let publish = PublishSettings {
            message_stream: settings.email_client.broadcast_stream.clone(),
            test_links: UnsubscribeLinks::new(
                &settings.application.base_url,
                &keys.test_unsubscribe_token(),
                None,
            ),
            senders: background.notifier.clone(),
            archive: archive.clone(),
        };
        let limiter = RateLimiter::new(&settings.redis_uri, &settings.rate_limit)
            .context("Failed to set up rate limiting")?
            .with_metrics(metrics.clone());
        let readiness = readiness::Checker::start(
            &settings.database,
            limiter.for_this_thread()?,
            background.stop.child_token(),
        );
        let sessions = SessionStore::new(
            &settings.redis_uri,
            &settings.rate_limit.key_prefix,
            &settings.admin,
        )
        .context("Failed to set up admin sessions")?;
        let cookies = SessionCookies::new(settings.admin.secure_cookie);
        let totp_keys = TotpKeys::from_settings(&settings.admin)?;
        tokio::spawn(crate::admin::password::warm_up());
        let options = SubscriptionOptions {
            confirm_with_button: settings.subscriptions.confirm_with_button,
        };
        let metrics_server = metrics_server(&settings, &metrics)?;
        let uploads = ImportUploads::new(Importer::from_settings(&settings)?, &settings.imports);
        let signups = SignupSettings {
            newsletter,
            base_url: settings.application.base_url,
            token_lifetime: settings.subscriptions.token_lifetime(),
            message_stream: settings.email_client.transactional_stream.clone(),
            keys: keys.clone(),
        };
        let address = format!(
            "{}:{}",
            settings.application.host, settings.application.port
        );
        let listener =
            TcpListener::bind(&address).with_context(|| format!("Failed to bind {address}"))?;
        let port = listener.local_addr()?.port();
        let services = Services {
            options,
            signups,
            limiter,
            sessions,
            cookies,
            totp_keys,
            outbox: background.outbox.clone(),
            publish,
            progress,
            keys,
            readiness,
            webhooks: settings.webhooks.clone(),
            outgoing_webhooks: settings.outgoing_webhooks.clone(),
            webhook_policy: crate::webhooks::Policy::new(&settings.webhooks, &settings.campaigns),
            inbox: LocalInbox::new(&settings.email_client),
            metrics,
            archive,
            uploads,
        };
        let shape = ServerShape {
            shutdown_timeout: Duration::from_secs(settings.application.shutdown_timeout_seconds),
            hsts_max_age_seconds: settings.application.hsts_max_age_seconds,
        };
        let server = run(listener, settings.database, services, shape)?;
        tracing::info!(%address, port, "Listening");
        Ok(Self {
            port,
            server,
            streams,
            background,
            metrics_server,
        })
    }

    /// The port actually bound: differs from the configured one when that was 0.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where `GET /metrics` is served: differs from the configured port
    /// when that was 0.
    pub fn metrics_address(&self) -> std::net::SocketAddr {
        self.metrics_server.address()
    }

    /// Serves until SIGINT or SIGTERM. Then the server stops accepting
    /// connections and lets in-flight requests finish within the shutdown
    /// timeout; the delivery workers keep sending meanwhile (requests may
    /// still enqueue email) and stop, and the metrics listener last.
    pub async fn run_until_stopped(self) -> Result<(), std::io::Error> {
        let served = self.server.await;
        self.background.stop().await;
        self.metrics_server.stop().await;
        served
    }

    /// Stops this application from elsewhere the way SIGTERM does: for an
    /// embedder (the tests) that must know it has stopped writing to its
    /// database and Redis before it removes them.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            server: self.server.handle(),
            streams: self.streams.clone(),
        }
    }

    /// The process's listener: `listening()` on it resolves once other
    /// processes' notifications reach this one.
    pub fn wakeups(&self) -> &Wakeups {
        &self.background.wakeups
    }
}

/// Asks an [`Application`] to stop; see [`Application::stopper`].
#[derive(Clone)]
pub struct Stopper {
    server: ServerHandle,
    streams: CancellationToken,
}

impl Stopper {
    /// Starts the shutdown SIGTERM starts and returns at once: the live
    /// streams end (an open one would hold the server for its whole
    /// shutdown timeout), the server finishes the requests in flight and
    /// closes idle connections, then `run_until_stopped` stops the rest and
    /// returns.
    pub fn stop(&self) {
        self.streams.cancel();
        // The command is sent by the call; the future only waits for it.
        drop(self.server.stop(true));
    }
}

/// The channels a process listens on: work for its delivery loops, and
/// changes for the pages that follow an issue live.
const CHANNELS: [&str; 4] = [
    crate::outbox::CHANNEL,
    crate::campaigns::ledger::WORK_CHANNEL,
    crate::campaigns::ledger::PROGRESS_CHANNEL,
    crate::outgoing_webhooks::events::CHANNEL,
];

/// Everything a process runs besides its HTTP server, built the same way
/// for `newsletter serve` and `newsletter worker`: the one listener and the
/// one notifier of the process, the outbox, and, in a process that
/// delivers, the delivery workers, the campaign senders, the webhook
/// workers and the retention job. A new background job is wired in here and nowhere else.
pub struct Background {
    /// Where requests queue email; delivered here when this process
    /// delivers, by workers elsewhere otherwise.
    pub outbox: Outbox,
    /// The process's one listening connection.
    pub wakeups: Wakeups,
    /// Sends the process's notifications, after commit.
    pub notifier: Notifier,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Background {
    /// Starts it all; with `deliver`, the loops that send email too. Fails
    /// on settings that would let two workers send one message.
    pub fn start(
        settings: &Settings,
        metrics: &Metrics,
        deliver: bool,
    ) -> Result<Self, anyhow::Error> {
        let stop = CancellationToken::new();
        // Should a step below fail, what the ones before it started stops.
        let started = stop.clone().drop_guard();
        let mut tasks = JoinSet::new();
        // The listener holds one connection for good, and one more is
        // spare: a LISTEN given up on a silent connection may keep that one
        // until the kernel gives up on it. Notifications go out one at a
        // time.
        let (wakeups, listening) = Wakeups::start(
            Db::connect_lazy(&settings.database, 2),
            &CHANNELS,
            stop.clone(),
        );
        let (notifier, notifying) =
            Notifier::start(Db::connect_lazy(&settings.database, 1), stop.clone());
        tasks.spawn(async move {
            let _ = listening.await;
        });
        tasks.spawn(async move {
            let _ = notifying.await;
        });
        // One set of providers and throttles for both sources: a provider
        // found down by one is skipped by the other, and test sends share
        // the broadcast stream's rate with newsletter issues.
        let sending = if deliver {
            Some(Sending::new(settings, metrics)?)
        } else {
            None
        };
        let worker = match &sending {
            Some(sending) => {
                let db = metrics.watch_pool("delivery", delivery_db(settings));
                Some(sending.delivery_worker(settings, db, wakeups.clone(), notifier.clone())?)
            }
            None => None,
        };
        let (outbox, mut workers) = Outbox::start(worker, notifier.clone(), stop.clone());
        tasks.spawn(async move { while workers.join_next().await.is_some() {} });
        if let Some(sending) = &sending {
            let db = metrics.watch_pool("campaigns", campaigns_db(settings));
            let mut senders = sending
                .campaign_sender(settings, db, wakeups.clone(), notifier.clone())?
                .spawn(stop.clone());
            tasks.spawn(async move { while senders.join_next().await.is_some() {} });
            let db = metrics.watch_pool("webhooks", webhooks_db(settings));
            let mut hooks =
                webhook_worker(settings, db, wakeups.clone(), metrics)?.spawn(stop.clone());
            tasks.spawn(async move { while hooks.join_next().await.is_some() {} });
            if let Some(retention) = retention_job(settings)? {
                tasks.spawn(retention.run_periodically(stop.clone()));
            }
        }
        started.disarm();
        Ok(Self {
            outbox,
            wakeups,
            notifier,
            stop,
            tasks,
        })
    }

    /// Stops every task and waits for them: the email in flight is sent
    /// and recorded first.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Dropped without [`Background::stop`] (a start or a build that failed
/// halfway), every task is told to stop, the listener and the notifier
/// included, rather than left running with nobody to stop them.
impl Drop for Background {
    fn drop(&mut self) {
        self.stop.cancel();
        // Let them finish as they do on a stop: aborted, a delivery in
        // flight would lose the record of a message the API took.
        self.tasks.detach_all();
    }
}

/// The metrics of one process, whose scrapes read the database's gauges on
/// a connection of their own: a scrape never takes one a request needs.
pub fn metrics(settings: &Settings) -> Metrics {
    Metrics::with_database(GaugeReader(Db::connect_lazy(&settings.database, 1)))
}

/// What a scrape reads from the database, asked of the tables' owners:
/// the metrics sit below them (they count through it) and cannot call them.
struct GaugeReader(Db);

impl DatabaseGauges for GaugeReader {
    fn read(&self) -> BoxFuture<'_, Result<DatabaseState, db::Error>> {
        Box::pin(self.0.bounded(|connection| {
            Box::pin(async move {
                let depth = outbox::store::depth(&mut *connection).await?;
                let issues = ledger::in_flight(&mut *connection).await?;
                let (webhooks_pending, webhooks_claimed) =
                    webhook_deliveries::depth(&mut *connection).await?;
                Ok(DatabaseState {
                    webhooks_pending,
                    webhooks_claimed,
                    outbox_pending: depth.pending,
                    outbox_claimed: depth.claimed,
                    oldest_pending_seconds: depth.oldest_pending_seconds,
                    issues: issues
                        .into_iter()
                        .map(|issue| IssueCounts {
                            id: issue.id,
                            sending: issue.state == IssueState::Sending,
                            recipients: issue.recipients,
                            sent: issue.sent,
                            failed: issue.failed,
                            skipped: issue.skipped,
                            bounced: issue.bounced,
                            complained: issue.complained,
                        })
                        .collect(),
                })
            })
        }))
    }
}

/// Serves `GET /metrics` for `metrics` on `application.host` and
/// `metrics.port`.
pub fn metrics_server(
    settings: &Settings,
    metrics: &Metrics,
) -> Result<MetricsServer, anyhow::Error> {
    MetricsServer::start(
        &settings.application.host,
        settings.metrics.port,
        metrics.clone(),
    )
}

/// What both sources send through, built once per process: the
/// providers of each stream with their circuits, and each stream's throttle.
pub struct Sending {
    routes: Routes,
    throttles: Throttles,
    metrics: Metrics,
}

impl Sending {
    pub fn new(settings: &Settings, metrics: &Metrics) -> Result<Self, anyhow::Error> {
        let routes = Routes::build(
            &settings.email_client,
            &settings.database,
            &settings.newsletter.parse()?,
            metrics,
        )
        .context("Failed to set up the email providers")?;
        let campaigns = &settings.campaigns;
        let throttle = Throttle::new(
            &settings.redis_uri,
            &settings.rate_limit.key_prefix,
            &settings.email_client.broadcast_stream,
            campaigns.messages_per_second,
            campaigns.sending.batch_size.max(1) as u32,
        )
        .context("Failed to set up the broadcast throttle")?;
        let throttles =
            Throttles::default().with(&settings.email_client.broadcast_stream, throttle);
        Ok(Self {
            routes,
            throttles,
            metrics: metrics.clone(),
        })
    }

    /// The email carrier over these providers and throttles: both
    /// sources share its circuits and schedules.
    fn mail(&self) -> Mail {
        Mail::new(self.routes.clone(), self.throttles.clone())
    }

    /// The outbox's workers. Fails if a claim could lapse while a call
    /// (and its failover) is still going, which would let a second worker
    /// send the same message. A message handed over in the process may also
    /// wait out a batch linger before it is sent.
    pub fn delivery_worker(
        &self,
        settings: &Settings,
        db: Db,
        wakeups: Wakeups,
        notifier: Notifier,
    ) -> Result<DeliveryWorker, anyhow::Error> {
        let delivery = &settings.delivery.sending;
        let send_time = self.routes.longest_call();
        delivery.check(
            "delivery",
            (
                send_time + delivery.batch_linger(),
                "the longest call to a provider (email_client.timeout_milliseconds, twice \
                 email_client.smtp.timeout_milliseconds) plus delivery.batch_linger_milliseconds",
            ),
            self.routes.max_batch(),
        )?;
        let source = OutboxSource::new(
            db.clone(),
            delivery.clone(),
            send_time,
            Doorbell::new(notifier),
            self.metrics.clone(),
        );
        Ok(DeliveryWorker::new(
            source,
            db,
            self.mail(),
            delivery.clone(),
            wakeups,
        ))
    }

    /// The campaigns' senders.
    pub fn campaign_sender(
        &self,
        settings: &Settings,
        db: Db,
        wakeups: Wakeups,
        notifier: Notifier,
    ) -> Result<Sender, anyhow::Error> {
        let campaigns = &settings.campaigns;
        let send_time = self.routes.longest_call();
        // A sender may wait for its turn on the throttle under the claim
        // too: the claim leaves it as long again as a call.
        campaigns.sending.check(
            "campaigns",
            (
                send_time * 2,
                "twice the longest call to a provider (email_client.timeout_milliseconds, \
                 twice email_client.smtp.timeout_milliseconds)",
            ),
            self.routes.max_batch(),
        )?;
        let keys = Keys::derive(&settings.application.hmac_secret).map_err(anyhow::Error::msg)?;
        let source = CampaignSource::new(
            db.clone(),
            campaigns.clone(),
            settings.application.base_url.clone(),
            keys,
            send_time,
            notifier,
        )?;
        Ok(Sender::new(
            source,
            db,
            self.mail(),
            campaigns.sending.clone(),
            wakeups,
        ))
    }
}

/// A delivery worker for these settings, with providers of its own: for
/// tests and tools that run one outside [`Background`].
pub fn delivery_worker(
    settings: &Settings,
    db: Db,
    wakeups: Wakeups,
) -> Result<DeliveryWorker, anyhow::Error> {
    Sending::new(settings, &Metrics::default())?.delivery_worker(
        settings,
        db,
        wakeups,
        Notifier::silent(),
    )
}

/// Campaign senders for these settings, with providers and a pool of their
/// own: for tests and tools that run them outside [`Background`].
pub fn campaign_sender(
    settings: &Settings,
    wakeups: Wakeups,
    notifier: Notifier,
) -> Result<Sender, anyhow::Error> {
    Sending::new(settings, &Metrics::default())?.campaign_sender(
        settings,
        campaigns_db(settings),
        wakeups,
        notifier,
    )
}

/// The webhook workers, calling out through the guarded client: for
/// [`Background`], and for tests and tools that run them outside it. Fails
/// if a claim could lapse while a call is still going, which would let a
/// second worker make the same call.
pub fn webhook_worker(
    settings: &Settings,
    db: Db,
    wakeups: Wakeups,
    metrics: &Metrics,
) -> Result<WebhookWorker, anyhow::Error> {
    let hooks = &settings.outgoing_webhooks;
    hooks.check()?;
    let send_loop = hooks.send_loop();
    send_loop.check(
        "outgoing_webhooks",
        (
            hooks.call_time(),
            "the longest call (outgoing_webhooks.timeout_milliseconds)",
        ),
        1000,
    )?;
    let client = HookClient::new(&HookClientSettings::from(hooks))
        .context("Failed to set up the webhook client")?
        .with_metrics(metrics.clone());
    let source = WebhookSource::new(db.clone(), hooks.clone(), metrics.clone());
    Ok(WebhookWorker::new(
        source,
        db,
        Calls::new(client),
        send_loop,
        wakeups,
    ))
}

/// The webhook workers' pool: per worker, one connection it claims on and
/// one it records on.
fn webhooks_db(settings: &Settings) -> Db {
    let connections = (settings.outgoing_webhooks.workers as u32).max(1) * 2;
    Db::connect_lazy(&settings.database, connections)
}

/// The senders' pool: per sender, one connection it works on and one it
/// records on, and one spare.
fn campaigns_db(settings: &Settings) -> Db {
    let connections = (settings.campaigns.sending.workers as u32).max(1) * 2 + 1;
    Db::connect_lazy(&settings.database, connections)
}

/// The retention job, if `retention.enabled`, with one connection of its
/// own: its batches run one after another, and never take a connection
/// that requests or deliveries wait for.
pub fn retention_job(settings: &Settings) -> Result<Option<Retention>, anyhow::Error> {
    if !settings.retention.enabled {
        return Ok(None);
    }
    Ok(Some(Retention::new(
        Db::connect_lazy(&settings.database, 1),
        settings.retention.clone(),
    )?))
}

/// Delivery workers get a pool of their own, so that a backlog of email
/// cannot take the connections HTTP requests need (and the other way round).
/// Two connections per worker, one to claim while the other records
/// outcomes, and one more for the batches handed over in this process.
pub fn delivery_db(settings: &Settings) -> Db {
    let connections = (settings.delivery.sending.workers as u32).max(1) * 2 + 1;
    Db::connect_lazy(&settings.database, connections)
}

/// What the HTTP worker threads are built from.
struct Services {
    options: SubscriptionOptions,
    signups: SignupSettings,
    /// Each thread makes its own copy, with a Redis connection of its own.
    limiter: RateLimiter,
    /// One for all threads: admin traffic is light, and the store's Redis
    /// connection is multiplexed.
    sessions: SessionStore,
    cookies: SessionCookies,
    /// Seal and open admins' TOTP secrets.
    totp_keys: TotpKeys,
    outbox: Outbox,
    publish: PublishSettings,
    /// Changes to newsletter issues, for the pages following them live.
    progress: ProgressFeed,
    /// Signs unsubscribe links and hashes suppressed addresses.
    keys: Keys,
    /// The last check of the dependencies, for `/ready`.
    readiness: readiness::Checker,
    webhooks: WebhookSettings,
    /// What the webhook endpoints' form accepts.
    outgoing_webhooks: OutgoingWebhookSettings,
    /// What webhook records are judged by.
    webhook_policy: crate::webhooks::Policy,
    /// Whether the `/admin/inbox` pages have emails to show.
    inbox: LocalInbox,
    metrics: Metrics,
    /// The public archive's rendered pages: one cache for all threads.
    archive: Archive,
    /// Starts the imports the admin uploads.
    uploads: ImportUploads,
}

/// How long a new worker keeps trying to open its Redis connection before it
/// leaves that to the first request.
const REDIS_WARM_UP: Duration = Duration::from_secs(2);

/// Sign-up writers per HTTP worker thread, each with a transaction open at a
/// time. Sign-ups that arrive while all are busy share the next transaction.
const SIGNUP_WRITERS: usize = 2;

/// HTTP worker threads: one per core.
fn http_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Each HTTP worker thread gets a pool and a Redis connection of its own,
/// created on that thread, and `database.max_connections` is shared out
/// among the workers. A connection is driven by the runtime it was opened
/// on: used from another worker's thread, each of its reads and writes
/// would wake that thread, and that thread would wake the worker back.
/// How the HTTP server itself behaves, apart from what handlers share.
struct ServerShape {
    shutdown_timeout: Duration,
    hsts_max_age_seconds: u64,
}

fn run(
    listener: TcpListener,
    database: DatabaseSettings,
    services: Services,
    shape: ServerShape,
) -> Result<Server, anyhow::Error> {
    let Services {
        options,
        signups,
        limiter,
        sessions,
        cookies,
        totp_keys,
        outbox,
        publish,
        progress,
        keys,
        readiness,
        webhooks,
        outgoing_webhooks,
        webhook_policy,
        inbox,
        metrics,
        archive,
        uploads,
    } = services;
    let uploads = web::Data::new(uploads);
    let archive = web::Data::new(archive);
    let readiness = web::Data::new(readiness);
    let metrics = web::Data::new(metrics);
    let webhook_policy = web::Data::new(webhook_policy);
    let inbox = web::Data::new(inbox);
    let keys = web::Data::new(keys);
    let webhooks = web::Data::new(webhooks);
    let outgoing_webhooks = web::Data::new(outgoing_webhooks);
    let publish = web::Data::new(publish);
    let progress = web::Data::new(progress);
    let sessions = web::Data::new(sessions);
    let cookies = web::Data::new(cookies);
    let totp_keys = web::Data::new(totp_keys);
    let workers = http_workers();
    let per_worker = database.max_connections.div_ceil(workers as u32).max(1);
    let limiter = std::sync::Arc::new(limiter);
    let options = web::Data::new(options);
    let newsletter = web::Data::new(signups.newsletter.clone());
    let welcomer = web::Data::new(Welcomer {
        outbox: outbox.clone(),
        letterhead: signups.letterhead(),
    });
    let signups = std::sync::Arc::new(signups);
    let writers = SIGNUP_WRITERS.min(per_worker as usize);
    let server = HttpServer::new(move || {
        let db = metrics.watch_pool("http", Db::connect_lazy(&database, per_worker));
        let signups = web::Data::new(Signups::start(
            db.clone(),
            outbox.clone(),
            signups.clone(),
            writers,
        ));
        let db = web::Data::new(db);
        let outbox = web::Data::new(outbox.clone());
        let limiter = web::Data::new(
            limiter
                .for_this_thread()
                .expect("the Redis client was valid when the limiter was built"),
        );
        // Connect now rather than on the first request, which would otherwise
        // wait for the connection or fall back to the in-process limits.
        let warm_up = limiter.clone();
        tokio::spawn(async move { warm_up.ping_redis(REDIS_WARM_UP).await });
        App::new()
            .wrap(TracingLogger::<RequestSpan>::new())
            .wrap(from_fn(count_requests))
            .app_data(form_config())
            .app_data(query_config())
            // Inside the security headers, so that a page made of a
            // refusal gets them too.
            .wrap(refusal_pages())
            .wrap(security_headers(shape.hsts_max_age_seconds))
            .configure(routes::configure)
            .default_service(web::to(routes::not_found))
            .app_data(db)
            .app_data(signups)
            .app_data(options.clone())
            .app_data(newsletter.clone())
            .app_data(welcomer.clone())
            .app_data(limiter)
            .app_data(sessions.clone())
            .app_data(cookies.clone())
            .app_data(totp_keys.clone())
            .app_data(outbox)
            .app_data(publish.clone())
            .app_data(progress.clone())
            .app_data(keys.clone())
            .app_data(readiness.clone())
            .app_data(webhooks.clone())
            .app_data(outgoing_webhooks.clone())
            .app_data(webhook_policy.clone())
            .app_data(inbox.clone())
            .app_data(metrics.clone())
            .app_data(archive.clone())
            .app_data(uploads.clone())
    })
    .workers(workers)
    .shutdown_timeout(shape.shutdown_timeout.as_secs())
    .listen(listener)?
    .run();
    Ok(server)
}

/// Ends the pages' live streams as soon as the process is asked to stop.
/// The server's graceful shutdown waits for every open connection, and a
/// stream left open would hold it for the whole shutdown timeout; the
/// server itself reacts to the same signals.
fn end_streams_on_signal(streams: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let terminate = async {
            match signal(SignalKind::terminate()) {
                Ok(mut terminate) => {
                    terminate.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot watch for SIGTERM; live streams end with the shutdown timeout");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = streams.cancelled() => {}
            _ = terminate => streams.cancel(),
            _ = tokio::signal::ctrl_c() => streams.cancel(),
        }
    });
}

/// Headers for every response. The pages load nothing but their own
/// stylesheet and submit only to this site; they may not be framed; and no
/// Referer leaves them (a confirmation page's address holds a token).
/// Behind TLS (production), browsers are told to use nothing else.
/// `DefaultHeaders` adds nothing to an error a middleware returns, so the
/// middlewares answer their refusals as responses instead.
fn security_headers(hsts_max_age_seconds: u64) -> DefaultHeaders {
    let headers = if hsts_max_age_seconds > 0 {
        DefaultHeaders::new().add((
            header::STRICT_TRANSPORT_SECURITY,
            format!("max-age={hsts_max_age_seconds}"),
        ))
    } else {
        DefaultHeaders::new()
    };
    headers
        .add((
            header::CONTENT_SECURITY_POLICY,
            crate::pages::CONTENT_SECURITY_POLICY,
        ))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
}

/// Extractor settings: bodies over the limit answer 413, other content types
/// 415, and every rejection goes through [`ApiError`] like handler errors do.
fn form_config() -> web::FormConfig {
    web::FormConfig::default()
        .limit(FORM_BODY_LIMIT_BYTES)
        .error_handler(|e, _| ApiError::from(e).into())
}

fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|e, _| {
        ApiError::BadRequest(format!("The query string is invalid: {e}.")).into()
    })
}
