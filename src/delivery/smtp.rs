//! Sends email through an SMTP server: the operator's own relay, or a
//! provider's SMTP endpoint, for a deployment that does not use Postmark's
//! API. The engine hands it a batch as it would hand Postmark one; here each
//! email of the batch is an SMTP transaction of its own, several at once
//! over a small pool of open sessions, and each gets its own [`Answer`].
//!
//! The pool is ours, not lettre's, for two reasons. lettre's transport
//! reports a failure without saying whether the session (connecting, TLS,
//! AUTH) or the email (MAIL, RCPT, DATA) was refused, and that is what tells
//! a server that is down from an email it will not take. And its timeout
//! bounds the TCP connect only: a server that stops answering in the middle
//! of a transaction would hold the call for ever, and cutting the send short
//! would put back into lettre's pool a session whose replies are out of step
//! with its commands, so that the next email would read the last one's.
//!
//! What a failed exchange means for its email is read by `read_reply` and
//! `read_error` below; the module's tests list the cases.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{self, response::Response};
use lettre::{Address, Message, address::Envelope};
use secrecy::ExposeSecret;
use tokio::sync::{Semaphore, SemaphorePermit};
use tracing::Instrument;

pub use crate::configuration::{SmtpSettings, SmtpTls};
use crate::delivery::answer::{Answer, Code, Refusal};
use crate::delivery::postmark::{self, Sender};
use crate::delivery::provider::{Failure, Provider};
use crate::emails::Email;
use crate::telemetry::error_chain_line;

/// An idle session is closed rather than reused after this long: servers
/// close quiet sessions themselves, many of them well before the five
/// minutes RFC 5321 asks them to wait.
const MAX_IDLE: Duration = Duration::from_secs(30);

/// A session idle for longer than this is asked for a `NOOP` before an
/// email is given to it, in case the server closed it meanwhile. Within a
/// batch, sessions come back within milliseconds and skip the round trip.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(2);

/// Carries the delivery id, as Postmark's metadata does, so that a bounce
/// that comes back by SMTP can be traced to its delivery.
const DELIVERY_HEADER: HeaderName = HeaderName::new_from_ascii_str("X-Newsletter-Delivery");

/// Sends each email of a batch as its own SMTP transaction.
pub struct SmtpProvider {
    server: Server,
    from: Mailbox,
    /// The sender address's domain, for the Message-IDs we make up.
    message_id_domain: String,
    timeout: Duration,
    pool_size: NonZeroUsize,
    sessions: Sessions,
}

impl SmtpProvider {
    /// Refuses settings that could never send: no host, no pool, no time,
    /// a username without a password, a sender lettre cannot write.
    pub fn new(settings: &SmtpSettings, sender: Sender) -> Result<Self, anyhow::Error> {
        if settings.host.trim().is_empty() {
            bail!("the SMTP host must not be empty");
        }
        let pool_size = NonZeroUsize::new(settings.pool_size as usize)
            .context("the SMTP pool size must be at least 1")?;
        let timeout = settings.timeout();
        if timeout.is_zero() {
            bail!("the SMTP timeout must be longer than zero");
        }
        let credentials = match settings.username.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(username) => {
                let password = settings
                    .password
                    .as_ref()
                    .context("an SMTP username needs a password")?;
                Some(Credentials::new(
                    username.to_owned(),
                    password.expose_secret().to_owned(),
                ))
            }
        };
        let from: Mailbox = sender
            .as_ref()
            .parse()
            .with_context(|| format!("the sender {} is not a mailbox", sender.as_ref()))?;
        let encryption = match settings.tls {
            SmtpTls::None => Encryption::None,
            SmtpTls::Starttls => Encryption::Starttls(tls_parameters(settings)?),
            SmtpTls::Implicit => Encryption::Implicit(tls_parameters(settings)?),
        };
        Ok(Self {
            server: Server {
                host: settings.host.clone(),
                port: settings.port,
                encryption,
                credentials,
                hello: ClientId::default(),
                timeout,
            },
            message_id_domain: from.email.domain().to_owned(),
            from,
            timeout,
            pool_size,
            sessions: Sessions {
                permits: Semaphore::new(pool_size.get()),
                idle: Mutex::new(Vec::new()),
            },
        })
    }

    /// One email, from its message to its answer. One that cannot start
    /// by `start_by` (every session busy with the call's earlier emails)
    /// is not sent: it is answered as throttled, and goes again without
    /// counting an attempt. That bounds a whole call by twice the timeout,
    /// whatever its size, so that a batch's claim outlasts it.
    async fn deliver(&self, email: &Email, start_by: tokio::time::Instant) -> Outcome {
        let message = match self.message(email) {
            Ok(message) => message,
            Err(reason) => {
                // The reason quotes the address: the log has it, the
                // record does not.
                tracing::warn!(%reason, "An email could not be written for SMTP");
                return Outcome::Answer(Answer::Refused(
                    Refusal::new("the email could not be written for SMTP")
                        .because("its recipient is not an address SMTP can carry"),
                ));
            }
        };
        // Waiting for a free session is not the server's time: the timeout
        // starts once one is ours.
        // A permit that is free is taken even past the deadline: the time
        // is checked again once it is ours.
        let permit = match tokio::time::timeout_at(start_by, self.sessions.permit()).await {
            Ok(permit) if tokio::time::Instant::now() < start_by => permit,
            _ => return Outcome::NotStarted,
        };
        let exchange = self.exchange(permit, &message);
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(_)) => Outcome::Answer(Answer::Sent {
                message_id: Some(message.id),
                provider: self.name(),
                code: None,
            }),
            Ok(Err(error)) => error.outcome(),
            Err(_) => Outcome::Down(SendError::TimedOut {
                server: self.server.to_string(),
                timeout: self.timeout,
            }),
        }
    }

    /// Lends a session and runs the email's transaction on it.
    async fn exchange<'a>(
        &'a self,
        permit: SemaphorePermit<'a>,
        message: &Prepared,
    ) -> Result<Response, SendError> {
        let mut session = self
            .sessions
            .lend(permit, &self.server)
            .await
            .map_err(|error| SendError::Session {
                server: self.server.to_string(),
                error,
            })?;
        session
            .send(&message.envelope, &message.bytes)
            .await
            .map_err(|error| SendError::Transaction {
                server: self.server.to_string(),
                error,
            })
    }

    /// The email as it goes on the wire, under a Message-ID of ours.
    fn message(&self, email: &Email) -> Result<Prepared, String> {
        let to: Address = email.to.as_ref().parse().map_err(|e| format!("{e}"))?;
        let id = format!("<{}@{}>", uuid::Uuid::new_v4(), self.message_id_domain);
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(email.content.subject.as_str())
            .message_id(Some(id.clone()));
        for (name, value) in email.unsubscribe.iter().flat_map(|links| links.headers()) {
            builder = builder.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value,
            ));
        }
        if let Some(delivery) = email.delivery {
            builder = builder.raw_header(HeaderValue::new(DELIVERY_HEADER, delivery.to_string()));
        }
        let message = builder
            .multipart(MultiPart::alternative_plain_html(
                email.content.text_body.clone(),
                email.content.html_body.clone(),
            ))
            .map_err(|e| format!("{e}"))?;
        Ok(Prepared {
            id,
            envelope: message.envelope().clone(),
            bytes: message.formatted(),
        })
    }

    /// One answer per email, or the call's failure when the server looked
    /// down for every one of them.
    /// Emails that never started say nothing about the server: the call
    /// is down when every email that started found it down.
    fn answers(&self, outcomes: Vec<Outcome>) -> Result<Vec<Answer>, Failure> {
        let mut down = outcomes.iter().filter_map(|outcome| match outcome {
            Outcome::Down(error) => Some(error),
            Outcome::Answer(_) | Outcome::NotStarted => None,
        });
        if let Some(first) = down.next() {
            let cause = error_chain_line(first);
            let failed = 1 + down.count();
            tracing::warn!(
                error = %cause,
                failed,
                emails = outcomes.len(),
                "The SMTP server looks down"
            );
            let started = outcomes
                .iter()
                .filter(|outcome| !matches!(outcome, Outcome::NotStarted))
                .count();
            if failed == started {
                return Err(Failure::down(first.refusal()));
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Outcome::Answer(answer) => answer,
                Outcome::Down(error) => Answer::Passing {
                    error: error.refusal(),
                    retry_after: None,
                },
                // Not sent: it goes again without an attempt counted, as
                // for a server asking us to slow down.
                Outcome::NotStarted => Answer::Throttled { retry_after: None },
            })
            .collect())
    }
}

impl Provider for SmtpProvider {
    fn name(&self) -> &'static str {
        "smtp"
    }

    /// As many as Postmark takes, so that a batch made for one provider
    /// fits the other when sending moves between them.
    fn max_batch(&self) -> usize {
        postmark::MAX_BATCH
    }

    /// The last email starts within the timeout, and takes at most the
    /// timeout.
    fn longest_call(&self) -> Duration {
        self.timeout * 2
    }

    fn send<'a>(&'a self, emails: &'a [&'a Email]) -> BoxFuture<'a, Result<Vec<Answer>, Failure>> {
        let span = tracing::info_span!("Send a batch of emails over SMTP", size = emails.len());
        Box::pin(
            async move {
                let started = Instant::now();
                // `buffered` keeps the answers in the order of the emails
                // while up to a pool's worth of them are in flight.
                // The futures are made up front (they do nothing until
                // polled): a closure inside the stream would leave the
                // compiler unable to prove the whole future `Send`.
                let start_by = tokio::time::Instant::now() + self.timeout;
                let deliveries: Vec<_> = emails
                    .iter()
                    .map(|email| self.deliver(email, start_by))
                    .collect();
                let outcomes: Vec<Outcome> = stream::iter(deliveries)
                    .buffered(self.pool_size.get())
                    .collect()
                    .await;
                tracing::debug!(
                    emails = emails.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "SMTP call finished"
                );
                self.answers(outcomes)
            }
            .instrument(span),
        )
    }
}

impl fmt::Debug for SmtpProvider {
    /// Everything but the credentials, which only say whether there are any.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpProvider")
            .field("server", &self.server.to_string())
            .field("encryption", &self.server.encryption)
            .field("auth", &self.server.credentials.is_some())
            .field("from", &self.from.to_string())
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn tls_parameters(settings: &SmtpSettings) -> Result<TlsParameters, anyhow::Error> {
    TlsParameters::builder(settings.host.clone())
        .dangerous_accept_invalid_certs(settings.accept_invalid_certificates)
        .dangerous_accept_invalid_hostnames(settings.accept_invalid_certificates)
        .build_rustls()
        .context("could not set up TLS for the SMTP server")
}

/// An email ready for the wire.
struct Prepared {
    /// Its `Message-ID`, angle brackets included: the id the engine records,
    /// and what a bounce quotes back.
    id: String,
    envelope: Envelope,
    bytes: Vec<u8>,
}

/// What became of one email, before the call's answer is made of them all.
enum Outcome {
    Answer(Answer),
    /// No session came free within the call's time: never sent.
    NotStarted,
    /// The server looked down while this email was on its way.
    Down(SendError),
}

/// Where and how one email's exchange failed. lettre's errors print their
/// cause themselves, so they are part of each message rather than a
/// source: the cause chain would say it twice.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("could not open a session with the SMTP server at {server}: {error}")]
    Session { server: String, error: SessionError },
    #[error("the SMTP server at {server} failed the transaction: {error}")]
    Transaction { server: String, error: smtp::Error },
    #[error("the SMTP server at {server} did not finish within {timeout:?}")]
    TimedOut { server: String, timeout: Duration },
}

impl SendError {
    fn outcome(self) -> Outcome {
        let (stage, error) = match &self {
            SendError::Session {
                error: SessionError::Smtp(error),
                ..
            } => (Stage::Session, error),
            SendError::Transaction { error, .. } => (Stage::Transaction, error),
            SendError::Session {
                error: SessionError::Connect(_),
                ..
            }
            | SendError::TimedOut { .. } => return Outcome::Down(self),
        };
        match read_error(stage, error) {
            Reading::Down => Outcome::Down(self),
            Reading::Throttled => Outcome::Answer(Answer::Throttled { retry_after: None }),
            Reading::Passing => Outcome::Answer(Answer::Passing {
                error: with_reply(
                    Refusal::new("the SMTP server turned it away for now"),
                    error,
                ),
                retry_after: None,
            }),
            Reading::Refused => Outcome::Answer(Answer::Refused(match error.status() {
                Some(_) => with_reply(Refusal::new("the SMTP server refused it"), error),
                None => Refusal::new("the SMTP server cannot take it")
                    .because("the SMTP client would not send it to this server"),
            })),
        }
    }

    /// What is recorded of a server that looked down: the codes of its
    /// reply if it gave one, never its text.
    fn refusal(&self) -> Refusal {
        match self {
            SendError::TimedOut { .. } => Refusal::new("the SMTP server did not answer in time"),
            SendError::Session {
                error: SessionError::Connect(_),
                ..
            } => Refusal::new("the SMTP server could not be reached"),
            SendError::Session {
                error: SessionError::Smtp(error),
                ..
            } => with_reply(Refusal::new("the SMTP server refused the session"), error),
            SendError::Transaction { error, .. } => {
                with_reply(Refusal::new("the SMTP server is not taking mail"), error)
            }
        }
    }
}

/// `refusal` with the codes of the reply that `error` holds, if any, and
/// what they mean. The reply's text is left out: it often quotes the
/// recipient's address (`550 5.1.1 <ada@example.com>: unknown`).
fn with_reply(refusal: Refusal, error: &smtp::Error) -> Refusal {
    let Some(reply) = error.status().map(u16::from) else {
        return refusal.because("the connection failed without a reply");
    };
    let text = reply_text(error);
    let enhanced = split_enhanced_code(&text).0.and_then(|code| {
        let mut parts = code.split('.').map(str::parse::<u16>);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(class)), Some(Ok(subject)), Some(Ok(detail))) => {
                Some([class, subject, detail])
            }
            _ => None,
        }
    });
    refusal
        .with_code(Code::Smtp { reply, enhanced })
        .because(reply_meaning(reply, enhanced))
}

/// What a negative reply means: by its enhanced code (RFC 3463) when it has
/// one, else by its reply code (RFC 5321).
fn reply_meaning(reply: u16, enhanced: Option<[u16; 3]>) -> &'static str {
    match enhanced.map(|[_, subject, detail]| (subject, detail)) {
        Some((1, 1)) => "bad destination mailbox address",
        Some((1, 2)) => "bad destination system address",
        Some((1, 3)) => "bad destination mailbox address syntax",
        Some((1, _)) => "addressing status",
        Some((2, 1)) => "mailbox disabled",
        Some((2, 2)) => "mailbox full",
        Some((2, 3)) => "message length exceeds administrative limit",
        Some((2, _)) => "mailbox status",
        Some((3, _)) => "mail system status",
        Some((4, _)) => "network and routing status",
        Some((5, _)) => "mail delivery protocol status",
        Some((6, _)) => "message content or media status",
        Some((7, 1)) => "delivery not authorized, message refused",
        Some((7, _)) => "security or policy status",
        _ => match reply {
            421 => "service not available",
            450 => "mailbox unavailable",
            451 => "local error in processing",
            452 => "insufficient system storage",
            530 => "authentication required",
            535 => "authentication credentials invalid",
            550 => "mailbox unavailable",
            551 => "user not local",
            552 => "exceeded storage allocation",
            553 => "mailbox name not allowed",
            554 => "transaction failed",
            _ => "a reply this service does not name",
        },
    }
}

/// Where in the conversation with the server something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Opening a session: connecting, the greeting, EHLO, STARTTLS, AUTH.
    /// Nothing here is about an email.
    Session,
    /// One email's transaction: MAIL, RCPT, DATA and the message.
    Transaction,
}

/// What a failed exchange means for its email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Refused for good: the same email would be refused again.
    Refused,
    /// Refused for now: an attempt, retried later.
    Passing,
    /// The server asks us to slow down: not an attempt.
    Throttled,
    /// The server, not the email: it cannot be reached, or it refuses our
    /// session or credentials. When every email of a call reads so, the
    /// call fails as a whole and counts towards opening the circuit.
    Down,
}

/// What a failed exchange means, whether or not the server replied.
/// Without a reply, the connection failed (refused, reset, a TLS error) or
/// the server said something that is not SMTP: the server is down, unless
/// lettre itself would not send the email (an address with non-ASCII
/// characters to a server without SMTPUTF8), which fails the same way every
/// time.
fn read_error(stage: Stage, error: &smtp::Error) -> Reading {
    match error.status() {
        Some(code) => read_reply(stage, u16::from(code), &reply_text(error)),
        None if stage == Stage::Transaction && error.is_client() => Reading::Refused,
        None => Reading::Down,
    }
}

/// What a negative reply means.
///
/// - During the session, anything negative is the server's or ours, never
///   an email's: a 421 or 554 greeting, a refused EHLO or STARTTLS, 535 to
///   our credentials.
/// - In a transaction, 5xx refuses the email for good, except the codes
///   about our authentication (530 authentication required, 534 mechanism
///   too weak, 535 credentials refused, 538 encryption required), which no
///   email can fix.
/// - 421, 450, 451 and 452 about rates (an enhanced code 4.7.x, or a text
///   that speaks of a rate or of too many) are throttling. Greylisting is
///   also 4.7.x, but it is about one recipient and asks for minutes, so it
///   is an ordinary passing refusal.
/// - Any other 421 is the server closing the session: down. Any other 4xx
///   is passing.
fn read_reply(stage: Stage, code: u16, text: &str) -> Reading {
    if stage == Stage::Session {
        return Reading::Down;
    }
    match code {
        530 | 534 | 535 | 538 => Reading::Down,
        500..=599 => Reading::Refused,
        421 | 450..=452 if is_about_rate(text) => Reading::Throttled,
        421 => Reading::Down,
        400..=499 => Reading::Passing,
        _ => Reading::Down,
    }
}

/// Whether a transient reply's text says we are sending too fast.
fn is_about_rate(text: &str) -> bool {
    let text = text.to_lowercase();
    if text.contains("greylist") || text.contains("graylist") {
        return false;
    }
    let enhanced = split_enhanced_code(&text).0;
    enhanced.is_some_and(|code| code.starts_with("4.7."))
        || text.contains("too many")
        || text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| {
                word == "rate" || word.starts_with("ratelimit") || word.starts_with("throttl")
            })
}

/// The enhanced status code (RFC 3463) a reply's text starts with, if it
/// starts with one, and the rest of the text.
fn split_enhanced_code(text: &str) -> (Option<&str>, &str) {
    let (first, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut parts = first.split('.');
    let is_code = matches!(parts.next(), Some("2" | "4" | "5"))
        && parts.clone().count() == 2
        && parts
            .all(|part| (1..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit()));
    if is_code {
        (Some(first), rest)
    } else {
        (None, text)
    }
}

/// The text of a reply, as lettre keeps it: the cause of its error.
fn reply_text(error: &smtp::Error) -> String {
    std::error::Error::source(error)
        .map(|text| text.to_string())
        .unwrap_or_default()
}

/// How sessions are opened.
struct Server {
    host: String,
    port: u16,
    encryption: Encryption,
    credentials: Option<Credentials>,
    /// What EHLO says: this machine's host name.
    hello: ClientId,
    timeout: Duration,
}

enum Encryption {
    None,
    Starttls(TlsParameters),
    /// lettre opens these sockets itself, with Nagle's algorithm on (see
    /// `Server::connect`), so each email waits for a delayed ACK: about 20
    /// emails a second per session on loopback, against hundreds for the
    /// others. lettre can put TLS before the greeting only around a socket
    /// of its own, and doing the TLS ourselves would mean a second set of
    /// certificate checks beside lettre's; its next release fixes this.
    Implicit(TlsParameters),
}

impl fmt::Debug for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encryption::None => "none",
            Encryption::Starttls(_) => "starttls",
            Encryption::Implicit(_) => "implicit",
        })
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Server {
    /// A new session, encrypted and authenticated as configured, ready for
    /// its first transaction.
    async fn open(&self) -> Result<AsyncSmtpConnection, SessionError> {
        let mut connection = match &self.encryption {
            Encryption::Implicit(parameters) => {
                AsyncSmtpConnection::connect_tokio1(
                    (self.host.as_str(), self.port),
                    Some(self.timeout),
                    &self.hello,
                    Some(parameters.clone()),
                    None,
                )
                .await?
            }
            Encryption::None | Encryption::Starttls(_) => {
                let stream = self.connect().await.map_err(SessionError::Connect)?;
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello).await?
            }
        };
        if let Encryption::Starttls(parameters) = &self.encryption {
            // Fails when the server does not offer STARTTLS: required means
            // required, never plain text instead.
            connection.starttls(parameters.clone(), &self.hello).await?;
        }
        if let Some(credentials) = &self.credentials {
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(connection)
    }

    /// A TCP connection with Nagle's algorithm off. lettre writes a message
    /// and then the `.` that ends it as two writes; with Nagle on, the
    /// second waits for the server to acknowledge the first, which a server
    /// delays by up to 40 ms when it has nothing to say yet: 40 ms per
    /// email on every session. lettre 0.11.23 leaves the option alone on
    /// the sockets it opens, so for plain and STARTTLS sessions we open the
    /// socket. (Implicit TLS still goes through lettre, which can only wrap
    /// its own sockets in TLS; see `Encryption::Implicit`.) lettre's pull
    /// request 1159, merged after 0.11.23, sets the option itself: once a
    /// release has it, this can go.
    async fn connect(&self) -> std::io::Result<tokio::net::TcpStream> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Why a session could not be opened: both causes print as part of the
/// message, as in [`SendError`].
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("could not connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Smtp(#[from] smtp::Error),
}

/// The open sessions: at most a pool's worth at once, across every call,
/// and the idle ones kept for the next email.
struct Sessions {
    permits: Semaphore,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    connection: AsyncSmtpConnection,
    since: Instant,
}

impl Sessions {
    async fn permit(&self) -> SemaphorePermit<'_> {
        self.permits
            .acquire()
            .await
            .expect("the sessions' semaphore is never closed")
    }

    /// An idle session that still answers, or else a new one.
    async fn lend<'a>(
        &'a self,
        permit: SemaphorePermit<'a>,
        server: &Server,
    ) -> Result<Session<'a>, SessionError> {
        while let Some(idle) = self.take_idle() {
            let mut connection = idle.connection;
            if idle.since.elapsed() < CHECK_AFTER_IDLE || connection.test_connected().await {
                return Ok(Session::new(connection, self, permit));
            }
        }
        let connection = server.open().await?;
        Ok(Session::new(connection, self, permit))
    }

    /// The most recently used idle session, after closing those idle too
    /// long. The lock is never held across an await.
    fn take_idle(&self) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|session| session.since.elapsed() < MAX_IDLE);
        idle.pop()
    }
}

/// A session lent to one email. Dropping it gives it back to the idle ones
/// only if its last transaction finished: one that failed, or that the
/// timeout cut short, may still have replies on their way, which the next
/// email would read as its own. Such a session is closed instead.
struct Session<'a> {
    connection: Option<AsyncSmtpConnection>,
    reusable: bool,
    sessions: &'a Sessions,
    _permit: SemaphorePermit<'a>,
}

impl<'a> Session<'a> {
    fn new(
        connection: AsyncSmtpConnection,
        sessions: &'a Sessions,
        permit: SemaphorePermit<'a>,
    ) -> Self {
        Self {
            connection: Some(connection),
            reusable: true,
            sessions,
            _permit: permit,
        }
    }

    async fn send(&mut self, envelope: &Envelope, bytes: &[u8]) -> Result<Response, smtp::Error> {
        let connection = self
            .connection
            .as_mut()
            .expect("a lent session holds its connection until dropped");
        self.reusable = false;
        let response = connection.send(envelope, bytes).await;
        self.reusable = response.is_ok();
        response
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if self.reusable && !connection.has_broken() {
            let mut idle = self
                .sessions
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    use crate::domain::{Newsletter, SubscriberEmail};
    use crate::emails::{EmailContent, UnsubscribeLinks};

    fn sender() -> Sender {
        let newsletter = Newsletter::parse("The Desk", "", "The \"Rust\" Desk").unwrap();
        Sender::new(
            &newsletter,
            &SubscriberEmail::parse("news@desk.example.com").unwrap(),
        )
    }

    fn settings(json: serde_json::Value) -> SmtpSettings {
        serde_json::from_value(json).unwrap()
    }

    fn plain_settings() -> SmtpSettings {
        settings(serde_json::json!({
            "host": "127.0.0.1", "port": 2525, "tls": "none",
            "pool_size": 2, "timeout_milliseconds": 1000,
        }))
    }

    #[test]
    fn replies_during_the_session_mean_the_server_is_down_whatever_their_code() {
        for (code, text) in [
            (421, "4.3.2 Service not available"),
            (554, "5.7.1 No SMTP service here"),
            (535, "5.7.8 Authentication credentials invalid"),
            (451, "4.7.1 Too many connections"),
        ] {
            assert_eq!(
                read_reply(Stage::Session, code, text),
                Reading::Down,
                "{code} {text}"
            );
        }
    }

    #[test]
    fn replies_in_a_transaction_are_read_by_code_enhanced_code_and_text() {
        let cases = [
            (
                "unknown user",
                550,
                "5.1.1 <a@b.example>: User unknown",
                Reading::Refused,
            ),
            (
                "message too big",
                552,
                "5.3.4 Message too big",
                Reading::Refused,
            ),
            (
                "rejected at DATA",
                554,
                "5.7.1 Message rejected",
                Reading::Refused,
            ),
            (
                "authentication required",
                530,
                "5.7.0 Authentication required",
                Reading::Down,
            ),
            (
                "credentials refused",
                535,
                "5.7.8 Bad credentials",
                Reading::Down,
            ),
            ("try later", 451, "4.3.0 Try again later", Reading::Passing),
            ("mailbox busy", 450, "4.2.1 Mailbox busy", Reading::Passing),
            (
                "no storage",
                452,
                "4.3.1 Insufficient system storage",
                Reading::Passing,
            ),
            ("policy code", 451, "4.7.1 Slow down", Reading::Throttled),
            (
                "rate in text",
                450,
                "Sending rate exceeded",
                Reading::Throttled,
            ),
            (
                "too many in text",
                452,
                "Too many messages, slow down",
                Reading::Throttled,
            ),
            (
                "rate limit in a 421",
                421,
                "4.7.0 Rate limited",
                Reading::Throttled,
            ),
            ("closing a 421", 421, "4.3.2 Shutting down", Reading::Down),
            (
                "greylisting",
                450,
                "4.7.1 <a@b.example>: Recipient address rejected: Greylisted",
                Reading::Passing,
            ),
            (
                "a word holding rate",
                451,
                "4.3.0 Could not generate a reply",
                Reading::Passing,
            ),
            (
                "other 4xx rate",
                454,
                "4.7.0 TLS not available",
                Reading::Passing,
            ),
        ];
        for (case, code, text, reading) in cases {
            assert_eq!(
                read_reply(Stage::Transaction, code, text),
                reading,
                "{case}"
            );
        }
    }

    #[test]
    fn an_enhanced_code_is_read_only_at_the_start_of_the_text() {
        assert_eq!(
            split_enhanced_code("5.1.1 <a@b.example>: unknown"),
            (Some("5.1.1"), "<a@b.example>: unknown")
        );
        assert_eq!(split_enhanced_code("4.7.28 rate"), (Some("4.7.28"), "rate"));
        assert_eq!(split_enhanced_code("User unknown"), (None, "User unknown"));
        assert_eq!(split_enhanced_code("1.2.3 no"), (None, "1.2.3 no"));
        assert_eq!(split_enhanced_code("5.1 short"), (None, "5.1 short"));
    }

    #[test]
    fn numbers_and_flags_are_read_from_strings_as_environment_variables_give_them() {
        let settings = settings(serde_json::json!({
            "host": "smtp.example.com", "port": "587", "tls": "starttls",
            "username": "desk", "password": "secret",
            "pool_size": "4", "timeout_milliseconds": "2500",
            "accept_invalid_certificates": "true",
        }));
        assert_eq!(settings.port, 587);
        assert_eq!(settings.tls, SmtpTls::Starttls);
        assert_eq!(settings.pool_size, 4);
        assert_eq!(settings.timeout(), Duration::from_millis(2500));
        assert!(settings.accept_invalid_certificates);
    }

    #[test]
    fn certificates_are_checked_unless_the_settings_say_otherwise() {
        assert!(!plain_settings().accept_invalid_certificates);
    }

    #[test]
    fn settings_that_could_never_send_are_refused_with_a_reason() {
        let cases = [
            (
                "no pool",
                SmtpSettings {
                    pool_size: 0,
                    ..plain_settings()
                },
                "pool size",
            ),
            (
                "no time",
                SmtpSettings {
                    timeout_milliseconds: 0,
                    ..plain_settings()
                },
                "timeout",
            ),
            (
                "no host",
                SmtpSettings {
                    host: " ".into(),
                    ..plain_settings()
                },
                "host",
            ),
            (
                "no password",
                SmtpSettings {
                    username: Some("desk".into()),
                    ..plain_settings()
                },
                "password",
            ),
        ];
        for (case, settings, reason) in cases {
            let error = SmtpProvider::new(&settings, sender()).unwrap_err();
            assert!(error.to_string().contains(reason), "{case}: {error}");
        }
    }

    #[test]
    fn a_sender_name_with_quotes_and_accents_goes_out_as_an_ascii_from_header() {
        let newsletter = Newsletter::parse("The Desk", "", "Caf\u{e9} \"Ü\" Desk, Ltd").unwrap();
        let sender = Sender::new(
            &newsletter,
            &SubscriberEmail::parse("news@desk.example.com").unwrap(),
        );
        let provider = SmtpProvider::new(&plain_settings(), sender).unwrap();
        let email = Email {
            to: SubscriberEmail::parse("ada@example.com").unwrap(),
            content: EmailContent {
                subject: "Caf\u{e9}".into(),
                html_body: "<p>Caf\u{e9}</p>".into(),
                text_body: "Caf\u{e9}".into(),
            },
            message_stream: "outbound".into(),
            delivery: None,
            outbox_id: None,
            unsubscribe: None,
        };

        let message = provider.message(&email).unwrap();

        assert_eq!(
            provider.from.name.as_deref(),
            Some("Caf\u{e9} \"Ü\" Desk, Ltd")
        );
        assert!(
            message.bytes.is_ascii(),
            "{}",
            String::from_utf8_lossy(&message.bytes)
        );
    }

    #[test]
    fn the_debug_output_never_shows_the_password() {
        let settings = SmtpSettings {
            username: Some("desk".into()),
            password: Some(SecretString::from("hunter2")),
            ..plain_settings()
        };
        let provider = SmtpProvider::new(&settings, sender()).unwrap();
        assert!(!format!("{provider:?}").contains("hunter2"));
    }

    #[test]
    fn a_message_carries_its_headers_and_both_bodies_under_an_id_in_the_senders_domain() {
        let provider = SmtpProvider::new(&plain_settings(), sender()).unwrap();
        let keys =
            crate::keys::Keys::derive(&SecretString::from("0123456789abcdef0123456789abcdef"))
                .unwrap();
        let token = keys.unsubscribe_token(uuid::Uuid::new_v4());
        let links = UnsubscribeLinks::new("https://news.example.com", &token, None);
        let email = Email {
            to: SubscriberEmail::parse("ada@example.com").unwrap(),
            content: EmailContent {
                subject: "Issue 1".into(),
                html_body: "<p>Hello</p>".into(),
                text_body: "Hello".into(),
            },
            message_stream: "broadcast".into(),
            delivery: Some(format!("{}:3", uuid::Uuid::new_v4()).parse().unwrap()),
            outbox_id: None,
            unsubscribe: Some(links.clone()),
        };

        let message = provider.message(&email).unwrap();

        let text = String::from_utf8(message.bytes).unwrap();
        assert!(message.id.starts_with('<'), "{}", message.id);
        assert!(message.id.ends_with("@desk.example.com>"), "{}", message.id);
        for expected in [
            format!("Message-ID: {}", message.id),
            format!("List-Unsubscribe: <{}>", links.url()),
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click".to_owned(),
            format!("X-Newsletter-Delivery: {}", email.delivery.unwrap()),
            "From: \"The \\\"Rust\\\" Desk\" <news@desk.example.com>".to_owned(),
            "multipart/alternative".to_owned(),
        ] {
            assert!(text.contains(&expected), "no {expected:?} in:\n{text}");
        }
        assert_eq!(
            message.envelope.to(),
            &["ada@example.com".parse::<Address>().unwrap()]
        );
    }
}
