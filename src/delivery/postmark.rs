//! Sends email through Postmark's batch API (`POST /email/batch`, up to 500
//! messages a call: under load one HTTP request carries a whole batch of the
//! outbox instead of one per email). This module knows nothing about
//! subscribers or the database.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use futures::future::BoxFuture;

use crate::delivery::answer::{Answer, Code, Refusal};
use crate::delivery::provider::{Failure, Provider};
use crate::domain::{Newsletter, SubscriberEmail};
use crate::emails::Email;
use crate::metrics::{EmailApiError, Metrics};

#[derive(Debug, Clone)]
pub struct EmailClient {
    sender: Sender,
    http: Client,
    base_url: String,
    token: SecretString,
    /// Bounds each call, from the request to the last byte of the answer.
    timeout: Duration,
    /// Counts what is sent and what fails, and times each call.
    metrics: Metrics,
}

/// Who every email comes from: the newsletter's sender name and our
/// address, as the `From` header carries them, e.g. `"The Rust Desk"
/// <news@example.com>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender(String);

impl Sender {
    /// Takes the display name from a [`Newsletter`], whose sender name holds
    /// no control characters: with CR and LF refused, quoting is all a
    /// header needs, and no name can start a header of its own.
    pub fn new(newsletter: &Newsletter, address: &SubscriberEmail) -> Self {
        Self(name_addr(newsletter.sender_name(), address.as_ref()))
    }
}

impl AsRef<str> for Sender {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// An RFC 5322 `name-addr` (section 3.4) with the display name as a
/// quoted-string (section 3.2.4): a backslash before each `"` and `\`.
/// Always quoted, so that a comma, a colon or an `@` in the name cannot be
/// read as a second address or a group: a quoted-string is a valid
/// display name whatever printable text it holds.
fn name_addr(display_name: &str, address: &str) -> String {
    let mut header = String::with_capacity(display_name.len() + address.len() + 6);
    header.push('"');
    for c in display_name.chars() {
        if matches!(c, '"' | '\\') {
            header.push('\\');
        }
        header.push(c);
    }
    header.push_str("\" <");
    header.push_str(address);
    header.push('>');
    header
}

/// Why an email was not accepted. Callers can tell an unreachable API from a
/// refusal, and a refusal carries the status and what the API said.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("the email API could not be reached or did not answer in time")]
    Unreachable(#[source] reqwest::Error),
    #[error("the email API refused the request with {status}: {body}")]
    Rejected {
        status: StatusCode,
        body: String,
        /// Postmark's `ErrorCode`, when the body is one of its JSON errors.
        code: Option<i64>,
        /// What the API asked for in `Retry-After`, if anything.
        retry_after: Option<Duration>,
    },
    /// The API took the request, but its answer does not say which messages
    /// it accepted. Retrying may send some twice; not retrying may lose
    /// confirmations, which is worse.
    #[error("the email API's answer could not be read: {0}")]
    UnreadableAnswer(String),
}

/// What the API decided about one message of a batch it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Taken, under the API's id for the message.
    Accepted { message_id: Option<String> },
    /// Refused, with Postmark's error code and message.
    Refused { code: i64, message: String },
}

impl Verdict {
    /// Whether a Postmark error code names trouble that passes or that an
    /// operator can fix without touching the message: a bad server token
    /// (10), maintenance (100), the sender signature missing or
    /// unconfirmed (400, 401), the account not allowed to send, pending or
    /// suspended (405, 412, 413), the rate limit (429). Anything else is
    /// about the message itself (an invalid request, 300; an inactive
    /// recipient that bounced or complained, 406) and fails the same way
    /// every time.
    pub fn is_transient(code: i64) -> bool {
        matches!(code, 10 | 100 | 400 | 401 | 405 | 412 | 413 | 429)
    }
}

/// The most messages Postmark takes in one batch call.
pub const MAX_BATCH: usize = 500;

impl EmailError {
    /// Whether sending the same message again later can succeed. Timeouts,
    /// connection failures, 5xx and 429 are passing trouble. 401 and 403 mean
    /// our token is wrong: an operator can fix that, so the message waits for
    /// the fix instead of being given up. Any other 4xx (an invalid address,
    /// 422) fails the same way every time, unless Postmark's error code in
    /// the body says it is about our account rather than the messages
    /// ([`Verdict::is_transient`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            EmailError::Unreachable(_) | EmailError::UnreadableAnswer(_) => true,
            EmailError::Rejected { status, code, .. } => {
                status.is_server_error()
                    || matches!(
                        *status,
                        StatusCode::TOO_MANY_REQUESTS
                            | StatusCode::REQUEST_TIMEOUT
                            | StatusCode::UNAUTHORIZED
                            | StatusCode::FORBIDDEN
                    )
                    || code.is_some_and(Verdict::is_transient)
            }
        }
    }

    /// Whether the failure says Postmark cannot take mail from us now,
    /// rather than something about these messages: no answer, a 5xx, a
    /// refused token, or an error code about our account. Such failures
    /// open its circuit and move sending to the next provider.
    pub fn is_down(&self) -> bool {
        match self {
            EmailError::Unreachable(_) => true,
            EmailError::UnreadableAnswer(_) => false,
            EmailError::Rejected { status, code, .. } => {
                status.is_server_error()
                    || matches!(*status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
                    || code
                        .is_some_and(|code| matches!(code, 10 | 100 | 400 | 401 | 405 | 412 | 413))
            }
        }
    }

    /// What the failure counts as in the metrics.
    pub fn kind(&self) -> EmailApiError {
        match self {
            EmailError::Unreachable(_) => EmailApiError::unreachable,
            EmailError::UnreadableAnswer(_) => EmailApiError::unreadable_answer,
            EmailError::Rejected { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS => {
                EmailApiError::rate_limited
            }
            EmailError::Rejected { status, .. } if status.is_server_error() => {
                EmailApiError::server_error
            }
            EmailError::Rejected { .. } => EmailApiError::rejected,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            EmailError::Rejected { retry_after, .. } => *retry_after,
            EmailError::Unreachable(_) | EmailError::UnreadableAnswer(_) => None,
        }
    }
}

/// `Retry-After` is either a number of seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

/// An error body can be large; a prefix is enough to diagnose it.
const MAX_ERROR_BODY_BYTES: usize = 512;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SendEmailRequest<'a> {
    from: &'a str,
    to: &'a str,
    subject: &'a str,
    html_body: &'a str,
    text_body: &'a str,
    message_stream: &'a str,
    /// Comes back in webhooks: how a bounce finds its delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata>,
    /// Headers beyond Postmark's own fields: a newsletter's
    /// `List-Unsubscribe` pair.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<Header>,
}

/// A header as Postmark's `Headers` field takes it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Header {
    name: &'static str,
    value: String,
}

/// The extra headers an email goes out with.
fn headers(email: &Email) -> Vec<Header> {
    email
        .unsubscribe
        .iter()
        .flat_map(|links| links.headers())
        .map(|(name, value)| Header { name, value })
        .collect()
}

#[derive(Serialize)]
struct Metadata {
    delivery_id: String,
}

/// One entry of the batch answer, in the order the messages were sent; also
/// the shape of Postmark's error bodies.
#[derive(Deserialize)]
struct BatchAnswer {
    #[serde(rename = "ErrorCode")]
    error_code: i64,
    #[serde(rename = "Message", default)]
    message: String,
    #[serde(rename = "MessageID", default)]
    message_id: Option<String>,
}

impl From<BatchAnswer> for Verdict {
    fn from(answer: BatchAnswer) -> Self {
        if answer.error_code == 0 {
            Verdict::Accepted {
                message_id: answer.message_id,
            }
        } else {
            Verdict::Refused {
                code: answer.error_code,
                message: answer.message,
            }
        }
    }
}

impl EmailClient {
    pub fn postmark(
        base_url: String,
        sender: Sender,
        token: SecretString,
        timeout: Duration,
    ) -> Result<Self, anyhow::Error> {
        let http = Client::builder().timeout(timeout).build()?;
        Ok(Self {
            sender,
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
            timeout,
            metrics: Metrics::default(),
        })
    }

    /// The same client, counting into `metrics`.
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        Self { metrics, ..self }
    }

    /// Sends up to [`MAX_BATCH`] messages in one call. `Ok` holds a verdict
    /// per message, in order; `Err` means none was accepted.
    #[tracing::instrument(name = "Send a batch of emails", skip_all, fields(size = messages.len()))]
    pub async fn send_batch(&self, messages: &[&Email]) -> Result<Vec<Verdict>, EmailError> {
        let started = std::time::Instant::now();
        let outcome = self.call(messages).await;
        self.metrics.email_api_batch(started.elapsed());
        self.count(messages, &outcome);
        outcome
    }

    /// Emails accepted per stream, and failures by kind.
    fn count(&self, messages: &[&Email], outcome: &Result<Vec<Verdict>, EmailError>) {
        let verdicts = match outcome {
            Ok(verdicts) => verdicts,
            Err(e) => return self.metrics.email_api_error(e.kind()),
        };
        let mut sent: Vec<(&str, u64)> = Vec::new();
        for (message, verdict) in messages.iter().zip(verdicts) {
            match verdict {
                Verdict::Accepted { .. } => {
                    let stream = message.message_stream.as_str();
                    match sent.iter_mut().find(|(s, _)| *s == stream) {
                        Some((_, count)) => *count += 1,
                        None => sent.push((stream, 1)),
                    }
                }
                Verdict::Refused { .. } => {
                    self.metrics.email_api_error(EmailApiError::message_refused)
                }
            }
        }
        for (stream, count) in sent {
            self.metrics.emails_sent(stream, count);
        }
    }

    async fn call(&self, messages: &[&Email]) -> Result<Vec<Verdict>, EmailError> {
        assert!(
            messages.len() <= MAX_BATCH,
            "a batch holds at most {MAX_BATCH} messages"
        );
        let body: Vec<SendEmailRequest> = messages
            .iter()
            .map(|message| SendEmailRequest {
                from: self.sender.as_ref(),
                to: message.to.as_ref(),
                subject: &message.content.subject,
                html_body: &message.content.html_body,
                text_body: &message.content.text_body,
                message_stream: &message.message_stream,
                metadata: message.delivery.map(|id| Metadata {
                    delivery_id: id.to_string(),
                }),
                headers: headers(message),
            })
            .collect();
        let started = std::time::Instant::now();
        let (length, json) = json_body(&body);
        let response = self
            .http
            .post(format!("{}/email/batch", self.base_url))
            .header("X-Postmark-Server-Token", self.token.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(json)
            .send()
            .await
            .map_err(EmailError::Unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(rejection(response).await);
        }
        let answers: Vec<BatchAnswer> = response
            .json()
            .await
            .map_err(|e| EmailError::UnreadableAnswer(e.to_string()))?;
        // The call as the caller waits for it: the request written
        // out, the API's work and its answer read back. The campaign
        // benchmark reads its percentiles off these lines.
        tracing::debug!(
            took_ms = started.elapsed().as_secs_f64() * 1000.0,
            "The email API answered a batch"
        );
        if answers.len() != messages.len() {
            return Err(EmailError::UnreadableAnswer(format!(
                "{} answers for {} messages",
                answers.len(),
                messages.len()
            )));
        }
        Ok(answers.into_iter().map(Verdict::from).collect())
    }
}

impl Provider for EmailClient {
    fn name(&self) -> &'static str {
        "postmark"
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn longest_call(&self) -> Duration {
        self.timeout
    }

    fn send<'a>(&'a self, emails: &'a [&'a Email]) -> BoxFuture<'a, Result<Vec<Answer>, Failure>> {
        Box::pin(async move {
            let provider = self.name();
            match self.send_batch(emails).await {
                Ok(verdicts) => Ok(verdicts
                    .into_iter()
                    .map(|verdict| answer_of(provider, verdict))
                    .collect()),
                Err(error) => Err(Failure {
                    answer: answer_of_failed_call(&error),
                    down: error.is_down(),
                }),
            }
        })
    }
}

/// What Postmark decided about one message of a call it took.
fn answer_of(provider: &'static str, verdict: Verdict) -> Answer {
    match verdict {
        Verdict::Accepted { message_id } => Answer::Sent {
            message_id,
            provider,
            code: None,
        },
        Verdict::Refused { code: 429, .. } => Answer::Throttled { retry_after: None },
        // Postmark's message often quotes the recipient's address: the
        // code alone is kept (see `Refusal`).
        Verdict::Refused { code, .. } => {
            let error = Refusal::new("the email API refused it")
                .with_code(Code::Postmark(code))
                .because(error_code_meaning(code));
            if Verdict::is_transient(code) {
                Answer::Passing {
                    error,
                    retry_after: None,
                }
            } else {
                Answer::Refused(error)
            }
        }
    }
}

/// What a call that failed as a whole says of each message in it.
fn answer_of_failed_call(error: &EmailError) -> Answer {
    if is_throttling(error) {
        Answer::Throttled {
            retry_after: error.retry_after(),
        }
    } else if error.is_retryable() {
        Answer::Passing {
            error: refusal_of(error),
            retry_after: error.retry_after(),
        }
    } else {
        Answer::Refused(refusal_of(error))
    }
}

/// A failed call as it is recorded: its status and Postmark's error code,
/// never the body, which may quote an address.
fn refusal_of(error: &EmailError) -> Refusal {
    match error {
        EmailError::Unreachable(_) => {
            Refusal::new("the email API could not be reached or did not answer in time")
        }
        EmailError::UnreadableAnswer(_) => Refusal::new("the email API's answer could not be read"),
        EmailError::Rejected { status, code, .. } => {
            let refusal = Refusal::new("the email API refused the request").with_code(Code::Http {
                status: status.as_u16(),
                error_code: *code,
            });
            match code {
                Some(code) => refusal.because(error_code_meaning(*code)),
                None => refusal.because(status.canonical_reason().unwrap_or("no reason given")),
            }
        }
    }
}

/// What one of Postmark's error codes means, in its own words where it has
/// some (<https://postmarkapp.com/developer/api/overview#error-codes>).
fn error_code_meaning(code: i64) -> &'static str {
    match code {
        10 => "bad or missing server token",
        100 => "maintenance",
        300 => "invalid email request",
        400 => "sender signature not found",
        401 => "sender signature not confirmed",
        402 => "invalid JSON",
        403 => "incompatible JSON",
        405 => "not allowed to send",
        406 => "inactive recipient",
        409 => "JSON required",
        410 => "too many batch messages",
        411 => "forbidden attachment type",
        412 => "account is pending",
        413 => "account may not send",
        429 => "rate limit exceeded",
        _ => "an error code this service does not know",
    }
}

/// A "too many requests" answer, by status or by Postmark's error code.
fn is_throttling(error: &EmailError) -> bool {
    matches!(
        error,
        EmailError::Rejected { status, code, .. }
            if *status == reqwest::StatusCode::TOO_MANY_REQUESTS || *code == Some(429)
    )
}

/// A batch as a JSON array, one part per message, sent as a stream: the
/// parts are freed as they are written, and none is large. Built as one
/// buffer instead, a batch of newsletters (some 7 MB for 500) was one large
/// allocation per call that the allocator kept hold of: the campaign
/// benchmark's worker peaked at 62 to 81 MiB that way, 51 to 55 MiB this
/// way. The length is sent as usual, not chunked.
fn json_body(messages: &[SendEmailRequest]) -> (u64, reqwest::Body) {
    let mut parts = Vec::with_capacity(messages.len() + 1);
    let mut length = 0;
    for (i, message) in messages.iter().enumerate() {
        // Escaping (a quote in HTML, a line break) makes the JSON a little
        // longer than the text it carries.
        let text = message.subject.len() + message.html_body.len() + message.text_body.len();
        let mut part = Vec::with_capacity(text + text / 8 + 512);
        part.push(if i == 0 { b'[' } else { b',' });
        serde_json::to_writer(&mut part, message).expect("a message serialises to memory");
        length += part.len() as u64;
        parts.push(part);
    }
    let end = if messages.is_empty() {
        b"[]".to_vec()
    } else {
        b"]".to_vec()
    };
    length += end.len() as u64;
    parts.push(end);
    let stream = futures::stream::iter(parts.into_iter().map(Ok::<_, std::convert::Infallible>));
    (length, reqwest::Body::wrap_stream(stream))
}

/// The error for a non-2xx answer: its status, the start of its body, and
/// the delay it asked for.
async fn rejection(response: reqwest::Response) -> EmailError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let mut body = response.text().await.unwrap_or_default();
    let code = serde_json::from_str::<BatchAnswer>(&body)
        .ok()
        .map(|answer| answer.error_code);
    if body.len() > MAX_ERROR_BODY_BYTES {
        let cut = body.floor_char_boundary(MAX_ERROR_BODY_BYTES);
        body.truncate(cut);
    }
    EmailError::Rejected {
        status,
        body,
        code,
        retry_after,
    }
}

#[cfg(test)]
mod sender_tests {
    use super::*;

    fn sender(display_name: &str) -> Sender {
        let newsletter = Newsletter::parse("Title", "", display_name).unwrap();
        Sender::new(
            &newsletter,
            &SubscriberEmail::parse("news@example.com").unwrap(),
        )
    }

    #[test]
    fn the_display_name_is_quoted_before_the_address() {
        assert_eq!(
            sender("The Rust Desk").as_ref(),
            r#""The Rust Desk" <news@example.com>"#
        );
    }

    #[test]
    fn quotes_and_backslashes_in_the_display_name_are_escaped() {
        let cases = [
            (
                r#"The "Rust" Desk"#,
                r#""The \"Rust\" Desk" <news@example.com>"#,
            ),
            (r"Back\slash", r#""Back\\slash" <news@example.com>"#),
            (r#"\""#, r#""\\\"" <news@example.com>"#),
        ];
        for (display_name, expected) in cases {
            assert_eq!(sender(display_name).as_ref(), expected, "{display_name}");
        }
    }

    #[test]
    fn address_syntax_in_the_display_name_stays_inside_the_quotes() {
        let from = sender("Desk <evil@example.com>, other@example.com; group:");
        assert_eq!(
            from.as_ref(),
            r#""Desk <evil@example.com>, other@example.com; group:" <news@example.com>"#
        );
    }

    #[test]
    fn letters_beyond_ascii_are_kept_as_they_are() {
        assert_eq!(
            sender("Þórunn's Brief 📬").as_ref(),
            r#""Þórunn's Brief 📬" <news@example.com>"#
        );
    }

    /// The header cannot be split: a sender name with a line break never
    /// becomes a [`Newsletter`], so it never reaches a [`Sender`].
    #[test]
    fn a_sender_name_that_would_add_a_header_is_refused_before_it_reaches_one() {
        for name in [
            "Desk\r\nBcc: victim@example.com",
            "Desk\nBcc: victim@example.com",
            "Desk\rBcc: victim@example.com",
            "Desk\u{85}Bcc: victim@example.com",
            "Desk\u{2028}Bcc: victim@example.com",
        ] {
            assert!(
                Newsletter::parse("Title", "", name).is_err(),
                "accepted {name:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{any, header, method, path};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    /// Matches a batch request: a JSON array whose every entry has every
    /// field Postmark requires.
    struct PostmarkBatchBody;

    impl wiremock::Match for PostmarkBatchBody {
        fn matches(&self, request: &Request) -> bool {
            let Ok(serde_json::Value::Array(messages)) =
                serde_json::from_slice::<serde_json::Value>(&request.body)
            else {
                return false;
            };
            !messages.is_empty()
                && messages.iter().all(|message| {
                    [
                        "From",
                        "To",
                        "Subject",
                        "HtmlBody",
                        "TextBody",
                        "MessageStream",
                    ]
                    .iter()
                    .all(|field| message.get(field).and_then(|v| v.as_str()).is_some())
                })
        }
    }

    fn email(address: &str) -> SubscriberEmail {
        SubscriberEmail::parse(address).unwrap()
    }

    fn sender() -> Sender {
        let newsletter = Newsletter::parse("The Rust Desk", "", "The Rust Desk").unwrap();
        Sender::new(&newsletter, &email("sender@example.com"))
    }

    fn client(base_url: String, timeout: Duration) -> EmailClient {
        EmailClient::postmark(
            base_url,
            sender(),
            SecretString::from("server-token"),
            timeout,
        )
        .unwrap()
    }

    /// A 200 answer with the given error code for each message.
    fn answer(error_codes: &[i64]) -> ResponseTemplate {
        let entries: Vec<_> = error_codes
            .iter()
            .enumerate()
            .map(|(n, code)| {
                serde_json::json!({
                    "ErrorCode": code,
                    "Message": if *code == 0 { "OK" } else { "Inactive recipient" },
                    "MessageID": format!("message-{n}"),
                })
            })
            .collect();
        ResponseTemplate::new(200).set_body_json(entries)
    }

    async fn send_to(
        client: &EmailClient,
        recipients: &[&str],
    ) -> Result<Vec<Verdict>, EmailError> {
        let emails: Vec<Email> = recipients
            .iter()
            .map(|to| Email {
                to: email(to),
                content: crate::emails::EmailContent {
                    subject: "Subject".into(),
                    html_body: "<p>Hi</p>".into(),
                    text_body: "Hi".into(),
                },
                message_stream: "outbound".into(),
                delivery: None,
                outbox_id: None,
                unsubscribe: None,
            })
            .collect();
        let emails: Vec<&Email> = emails.iter().collect();
        client.send_batch(&emails).await
    }

    async fn send(client: &EmailClient) -> Result<Vec<Verdict>, EmailError> {
        send_to(client, &["ursula@example.com"]).await
    }

    async fn error_for(response: ResponseTemplate) -> EmailError {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(response)
            .mount(&server)
            .await;
        send(&client(server.uri(), Duration::from_secs(5)))
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn a_batch_is_posted_in_the_postmark_request_shape() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/email/batch"))
            .and(header("X-Postmark-Server-Token", "server-token"))
            .and(header("Content-Type", "application/json"))
            .and(PostmarkBatchBody)
            .respond_with(answer(&[0, 0]))
            .expect(1)
            .mount(&server)
            .await;

        let result = send_to(
            &client(server.uri(), Duration::from_secs(5)),
            &["a@example.com", "b@example.com"],
        )
        .await;

        let ids: Vec<Option<String>> = result
            .unwrap()
            .into_iter()
            .map(|verdict| match verdict {
                Verdict::Accepted { message_id } => message_id,
                refused => panic!("expected every message accepted, got {refused:?}"),
            })
            .collect();
        assert_eq!(
            ids,
            vec![Some("message-0".to_owned()), Some("message-1".to_owned())]
        );
    }

    #[tokio::test]
    async fn each_message_has_sender_recipient_and_bodies_in_their_fields() {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(answer(&[0]))
            .mount(&server)
            .await;

        send(&client(server.uri(), Duration::from_secs(5)))
            .await
            .unwrap();

        let requests = server.received_requests().await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
        let message = &body[0];
        assert_eq!(message["From"], r#""The Rust Desk" <sender@example.com>"#);
        assert_eq!(message["To"], "ursula@example.com");
        assert_eq!(message["Subject"], "Subject");
        assert_eq!(message["HtmlBody"], "<p>Hi</p>");
        assert_eq!(message["TextBody"], "Hi");
        assert_eq!(message["MessageStream"], "outbound");
    }

    fn unsubscribe_links() -> crate::emails::UnsubscribeLinks {
        let keys =
            crate::keys::Keys::derive(&SecretString::from("0123456789abcdef0123456789abcdef"))
                .unwrap();
        let token = keys.unsubscribe_token(uuid::Uuid::new_v4());
        crate::emails::UnsubscribeLinks::new("https://news.example.com", &token, None)
    }

    #[tokio::test]
    async fn a_newsletter_carries_its_unsubscribe_headers_and_other_emails_none() {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(answer(&[0, 0]))
            .mount(&server)
            .await;
        let links = unsubscribe_links();
        let content = crate::emails::EmailContent {
            subject: "Subject".into(),
            html_body: "<p>Hi</p>".into(),
            text_body: "Hi".into(),
        };
        let newsletter = Email {
            to: email("a@example.com"),
            content: content.clone(),
            message_stream: "broadcast".into(),
            delivery: None,
            outbox_id: None,
            unsubscribe: Some(links.clone()),
        };
        let confirmation = Email {
            unsubscribe: None,
            to: email("b@example.com"),
            ..newsletter.clone()
        };

        client(server.uri(), Duration::from_secs(5))
            .send_batch(&[&newsletter, &confirmation])
            .await
            .unwrap();

        let requests = server.received_requests().await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
        assert_eq!(
            body[0]["Headers"],
            serde_json::json!([
                { "Name": "List-Unsubscribe", "Value": format!("<{}>", links.url()) },
                { "Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click" },
            ])
        );
        assert_eq!(body[1].get("Headers"), None, "{}", body[1]);
    }

    #[tokio::test]
    async fn a_message_refused_inside_an_accepted_batch_gets_its_own_verdict() {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(answer(&[0, 406, 0]))
            .mount(&server)
            .await;

        let verdicts = send_to(
            &client(server.uri(), Duration::from_secs(5)),
            &["a@example.com", "b@example.com", "c@example.com"],
        )
        .await
        .unwrap();

        assert!(matches!(verdicts[0], Verdict::Accepted { .. }));
        assert_eq!(
            verdicts[1],
            Verdict::Refused {
                code: 406,
                message: "Inactive recipient".into()
            }
        );
        assert!(matches!(verdicts[2], Verdict::Accepted { .. }));
    }

    #[tokio::test]
    async fn an_answer_that_does_not_match_the_batch_is_a_retryable_error() {
        for response in [
            answer(&[0, 0]),
            ResponseTemplate::new(200).set_body_string("not json"),
        ] {
            let err = error_for(response).await;
            assert!(matches!(err, EmailError::UnreadableAnswer(_)), "{err:?}");
            assert!(err.is_retryable());
        }
    }

    #[tokio::test]
    async fn a_trailing_slash_in_the_base_url_does_not_double_up() {
        let server = MockServer::start().await;
        Mock::given(path("/email/batch"))
            .respond_with(answer(&[0]))
            .expect(1)
            .mount(&server)
            .await;

        let result = send(&client(
            format!("{}/", server.uri()),
            Duration::from_secs(5),
        ))
        .await;

        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn a_non_2xx_answer_is_an_error_carrying_status_and_body() {
        let err =
            error_for(ResponseTemplate::new(422).set_body_string("Invalid 'To' address")).await;

        match err {
            EmailError::Rejected {
                status, ref body, ..
            } => {
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
                assert_eq!(body, "Invalid 'To' address");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn server_errors_and_429_are_retryable_but_422_and_400_are_not() {
        for (status, retryable) in [
            (500, true),
            (503, true),
            (429, true),
            (401, true),
            (422, false),
            (400, false),
            (404, false),
        ] {
            let err = error_for(ResponseTemplate::new(status)).await;
            assert_eq!(err.is_retryable(), retryable, "status {status}");
        }
    }

    #[test]
    fn postmark_codes_about_our_account_or_its_limits_are_transient_and_ones_about_the_message_are_not()
     {
        for (code, transient) in [
            (10, true),
            (100, true),
            (400, true),
            (401, true),
            (405, true),
            (412, true),
            (413, true),
            (429, true),
            (300, false),
            (406, false),
            (402, false),
            (0xdead, false),
        ] {
            assert_eq!(Verdict::is_transient(code), transient, "error code {code}");
        }
    }

    #[tokio::test]
    async fn a_422_whose_postmark_code_is_about_the_account_is_retryable() {
        for (code, retryable) in [(405, true), (412, true), (300, false), (406, false)] {
            let body = serde_json::json!({ "ErrorCode": code, "Message": "refused" });
            let err = error_for(ResponseTemplate::new(422).set_body_json(body)).await;
            assert!(
                matches!(err, EmailError::Rejected { code: Some(c), .. } if c == code),
                "{err:?}"
            );
            assert_eq!(err.is_retryable(), retryable, "error code {code}");
        }
    }

    #[tokio::test]
    async fn retry_after_in_seconds_is_read_from_the_answer() {
        let err = error_for(ResponseTemplate::new(429).insert_header("Retry-After", "7")).await;

        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn retry_after_as_an_http_date_is_the_time_until_that_date() {
        let at = chrono::Utc::now() + chrono::Duration::seconds(120);
        let header = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();

        let delay = parse_retry_after(&header).unwrap();

        assert!(delay > Duration::from_secs(100) && delay <= Duration::from_secs(120));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[tokio::test]
    async fn a_slow_api_times_out_after_the_configured_timeout() {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(answer(&[0]).set_delay(Duration::from_secs(30)))
            .mount(&server)
            .await;

        let result = send(&client(server.uri(), Duration::from_millis(200))).await;

        match result {
            Err(ref err @ EmailError::Unreachable(ref e)) => {
                assert!(e.is_timeout(), "{e:?}");
                assert!(err.is_retryable());
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod answer_tests {
    use super::*;

    fn rejected(status: u16, code: Option<i64>) -> EmailError {
        EmailError::Rejected {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            body: String::new(),
            code,
            retry_after: Some(Duration::from_secs(3)),
        }
    }

    #[test]
    fn a_rate_limit_is_throttling_by_status_or_by_code_and_never_an_attempt() {
        for (case, error) in [
            ("status 429", rejected(429, None)),
            ("code 429 in a 422", rejected(422, Some(429))),
        ] {
            assert_eq!(
                answer_of_failed_call(&error),
                Answer::Throttled {
                    retry_after: Some(Duration::from_secs(3))
                },
                "{case}"
            );
        }
        let one_message = Verdict::Refused {
            code: 429,
            message: "Rate limit exceeded".into(),
        };
        assert_eq!(
            answer_of("postmark", one_message),
            Answer::Throttled { retry_after: None }
        );
    }

    #[test]
    fn server_errors_and_account_codes_pass_and_message_codes_are_final() {
        assert!(matches!(
            answer_of_failed_call(&rejected(503, None)),
            Answer::Passing { .. }
        ));
        assert!(matches!(
            answer_of_failed_call(&rejected(422, Some(412))),
            Answer::Passing { .. }
        ));
        assert!(matches!(
            answer_of_failed_call(&rejected(422, Some(300))),
            Answer::Refused(_)
        ));
        let inactive = Verdict::Refused {
            code: 406,
            message: "Inactive recipient".into(),
        };
        assert_eq!(
            answer_of("postmark", inactive),
            Answer::Refused(
                Refusal::new("the email API refused it")
                    .with_code(Code::Postmark(406))
                    .because("inactive recipient")
            )
        );
    }

    #[test]
    fn what_is_kept_of_a_refusal_never_quotes_the_providers_words() {
        let quoting = Verdict::Refused {
            code: 300,
            message: "Invalid 'To' address: 'ada@example.com'.".into(),
        };
        let Answer::Refused(refusal) = answer_of("postmark", quoting) else {
            panic!("an invalid request is refused for good");
        };
        assert_eq!(
            refusal.to_string(),
            "the email API refused it (error 300): invalid email request"
        );
        let rejected = EmailError::Rejected {
            status: reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            body: r#"{"ErrorCode":300,"Message":"Invalid 'To' address: 'ada@example.com'."}"#
                .into(),
            code: Some(300),
            retry_after: None,
        };
        assert_eq!(
            refusal_of(&rejected).to_string(),
            "the email API refused the request (422, error 300): invalid email request"
        );
    }
}
