//! Sends email. In production through Postmark's HTTP API (`POST /email`);
//! in local runs through a console backend that writes each message to the
//! log, so the whole subscribe-and-confirm flow works without a provider.
//! This module knows nothing about subscribers or the database.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::domain::SubscriberEmail;

#[derive(Debug, Clone)]
pub struct EmailClient {
    sender: SubscriberEmail,
    transport: Transport,
}

#[derive(Debug, Clone)]
enum Transport {
    Postmark {
        http: Client,
        base_url: String,
        token: SecretString,
    },
    Console,
}

/// Why an email was not accepted. Callers can tell an unreachable API from a
/// refusal, and a refusal carries the status and what the API said.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("the email API could not be reached or did not answer in time")]
    Unreachable(#[source] reqwest::Error),
    #[error("the email API refused the message with {status}: {body}")]
    Rejected { status: StatusCode, body: String },
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
}

impl EmailClient {
    pub fn postmark(
        base_url: String,
        sender: SubscriberEmail,
        token: SecretString,
        timeout: Duration,
    ) -> Result<Self, anyhow::Error> {
        let http = Client::builder().timeout(timeout).build()?;
        Ok(Self {
            sender,
            transport: Transport::Postmark {
                http,
                base_url: base_url.trim_end_matches('/').to_owned(),
                token,
            },
        })
    }

    pub fn console(sender: SubscriberEmail) -> Self {
        Self {
            sender,
            transport: Transport::Console,
        }
    }

    #[tracing::instrument(name = "Send an email", skip_all)]
    pub async fn send_email(
        &self,
        recipient: &SubscriberEmail,
        subject: &str,
        html_body: &str,
        text_body: &str,
    ) -> Result<(), EmailError> {
        match &self.transport {
            Transport::Console => {
                // Local runs only: the text body is printed so that a developer
                // can follow the links in it.
                tracing::info!(
                    from = %self.sender,
                    to = %recipient,
                    subject,
                    text_body,
                    "Email written to the console instead of being sent"
                );
                Ok(())
            }
            Transport::Postmark {
                http,
                base_url,
                token,
            } => {
                let body = SendEmailRequest {
                    from: self.sender.as_ref(),
                    to: recipient.as_ref(),
                    subject,
                    html_body,
                    text_body,
                };
                let response = http
                    .post(format!("{base_url}/email"))
                    .header("X-Postmark-Server-Token", token.expose_secret())
                    .json(&body)
                    .send()
                    .await
                    .map_err(EmailError::Unreachable)?;
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                let mut body = response.text().await.unwrap_or_default();
                if body.len() > MAX_ERROR_BODY_BYTES {
                    let cut = body.floor_char_boundary(MAX_ERROR_BODY_BYTES);
                    body.truncate(cut);
                }
                Err(EmailError::Rejected { status, body })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{any, header, method, path};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    /// Matches a request whose JSON body has every field Postmark requires.
    struct PostmarkBody;

    impl wiremock::Match for PostmarkBody {
        fn matches(&self, request: &Request) -> bool {
            let Ok(body) = serde_json::from_slice::<serde_json::Value>(&request.body) else {
                return false;
            };
            ["From", "To", "Subject", "HtmlBody", "TextBody"]
                .iter()
                .all(|field| body.get(field).and_then(|v| v.as_str()).is_some())
        }
    }

    fn email(address: &str) -> SubscriberEmail {
        SubscriberEmail::parse(address).unwrap()
    }

    fn client(base_url: String, timeout: Duration) -> EmailClient {
        EmailClient::postmark(
            base_url,
            email("sender@example.com"),
            SecretString::from("server-token"),
            timeout,
        )
        .unwrap()
    }

    async fn send(client: &EmailClient) -> Result<(), EmailError> {
        client
            .send_email(&email("ursula@example.com"), "Subject", "<p>Hi</p>", "Hi")
            .await
    }

    #[tokio::test]
    async fn send_email_posts_the_postmark_request_shape() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/email"))
            .and(header("X-Postmark-Server-Token", "server-token"))
            .and(header("Content-Type", "application/json"))
            .and(PostmarkBody)
            .respond_with(ResponseTemplate::new(200))
            .expect(1)
            .mount(&server)
            .await;

        let result = send(&client(server.uri(), Duration::from_secs(5))).await;

        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn send_email_puts_sender_recipient_and_bodies_in_their_fields() {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;

        send(&client(server.uri(), Duration::from_secs(5)))
            .await
            .unwrap();

        let requests = server.received_requests().await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
        assert_eq!(body["From"], "sender@example.com");
        assert_eq!(body["To"], "ursula@example.com");
        assert_eq!(body["Subject"], "Subject");
        assert_eq!(body["HtmlBody"], "<p>Hi</p>");
        assert_eq!(body["TextBody"], "Hi");
    }

    #[tokio::test]
    async fn a_trailing_slash_in_the_base_url_does_not_double_up() {
        let server = MockServer::start().await;
        Mock::given(path("/email"))
            .respond_with(ResponseTemplate::new(200))
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
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(422).set_body_string("Invalid 'To' address"))
            .mount(&server)
            .await;

        let err = send(&client(server.uri(), Duration::from_secs(5)))
            .await
            .unwrap_err();

        match err {
            EmailError::Rejected { status, ref body } => {
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
                assert_eq!(body, "Invalid 'To' address");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_server_error_is_an_error() {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(500))
            .mount(&server)
            .await;

        let result = send(&client(server.uri(), Duration::from_secs(5))).await;

        assert!(matches!(result, Err(EmailError::Rejected { status, .. }) if status == 500));
    }

    #[tokio::test]
    async fn a_slow_api_times_out_after_the_configured_timeout() {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
            .mount(&server)
            .await;

        let result = send(&client(server.uri(), Duration::from_millis(200))).await;

        match result {
            Err(EmailError::Unreachable(e)) => assert!(e.is_timeout(), "{e:?}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_console_backend_sends_nothing_and_succeeds() {
        let client = EmailClient::console(email("sender@example.com"));
        assert!(send(&client).await.is_ok());
    }
}
