//! The SMTP provider against a real SMTP server (tests/smtp_server.py): what
//! arrives, and what each way of failing answers. No app and no database.

use std::time::{Duration, Instant};

use newsletter::delivery::answer::Answer;
use newsletter::delivery::postmark::Sender;
use newsletter::delivery::provider::{Failure, Provider};
use newsletter::delivery::smtp::{SmtpProvider, SmtpSettings, SmtpTls};
use newsletter::domain::{Newsletter, SubscriberEmail};
use newsletter::emails::{Email, EmailContent, UnsubscribeLinks};
use secrecy::SecretString;

use crate::smtp_server::{SmtpServer, SmtpServerOptions, plain_settings};

/// The sender as Python's parser gives the header back: the display name
/// without the quotes it does not need.
const FROM: &str = "The Rust Desk <news@desk.example.com>";

fn sender() -> Sender {
    let newsletter = Newsletter::parse("Rust Weekly", "", "The Rust Desk").unwrap();
    Sender::new(
        &newsletter,
        &SubscriberEmail::parse("news@desk.example.com").unwrap(),
    )
}

fn provider(settings: &SmtpSettings) -> SmtpProvider {
    SmtpProvider::new(settings, sender()).unwrap()
}

fn unsubscribe_links() -> UnsubscribeLinks {
    let keys =
        newsletter::keys::Keys::derive(&SecretString::from("0123456789abcdef0123456789abcdef"))
            .unwrap();
    let token = keys.unsubscribe_token(uuid::Uuid::new_v4());
    UnsubscribeLinks::new("https://news.example.com", &token, None)
}

/// A newsletter email to `to`, with its own subject and bodies.
fn newsletter_email(to: &str) -> Email {
    Email {
        to: SubscriberEmail::parse(to).unwrap(),
        content: EmailContent {
            subject: format!("Issue 12 for {to}"),
            html_body: format!("<p>Hello {to}, caf\u{e9} &amp; more</p>"),
            text_body: format!("Hello {to}, caf\u{e9} and more"),
        },
        message_stream: "broadcast".into(),
        delivery: Some(format!("{}:7", uuid::Uuid::new_v4()).parse().unwrap()),
        outbox_id: None,
        unsubscribe: Some(unsubscribe_links()),
    }
}

/// A confirmation email to `to`: no unsubscribe headers, no delivery.
fn confirmation_email(to: &str) -> Email {
    Email {
        message_stream: "outbound".into(),
        delivery: None,
        outbox_id: None,
        unsubscribe: None,
        ..newsletter_email(to)
    }
}

async fn send(provider: &SmtpProvider, emails: &[Email]) -> Result<Vec<Answer>, Failure> {
    let emails: Vec<&Email> = emails.iter().collect();
    provider.send(&emails).await
}

fn message_id(answer: &Answer) -> &str {
    match answer {
        Answer::Sent {
            message_id: Some(id),
            provider: "smtp",
            ..
        } => id,
        other => panic!("expected the email sent over SMTP, got {other:?}"),
    }
}

/// Bodies as Python's parser gives them back: with the line ending the
/// wire gave them.
fn body(text: &Option<String>) -> String {
    text.as_deref()
        .unwrap_or_default()
        .replace("\r\n", "\n")
        .trim_end()
        .to_owned()
}

#[tokio::test]
async fn a_batch_arrives_whole_with_its_headers_and_both_bodies_under_the_answered_message_ids() {
    let server = SmtpServer::start(SmtpServerOptions::default()).await;
    let mut emails: Vec<Email> = (0..6)
        .map(|n| newsletter_email(&format!("reader{n}@example.com")))
        .collect();
    emails.push(confirmation_email("new.reader@example.com"));

    let answers = send(&provider(&server.settings()), &emails).await.unwrap();

    assert_eq!(answers.len(), emails.len());
    let received = server.wait_for_messages(emails.len()).await;
    assert_eq!(received.len(), emails.len(), "one message per email");
    for (email, answer) in emails.iter().zip(&answers) {
        let to = email.to.as_ref();
        let message = received
            .iter()
            .find(|message| message.rcpt_to == to)
            .unwrap_or_else(|| panic!("nothing arrived for {to}"));
        assert_eq!(message.mail_from, "news@desk.example.com", "{to}");
        assert_eq!(message.header("From"), Some(FROM), "{to}");
        assert_eq!(message.header("To"), Some(to), "{to}");
        assert_eq!(
            message.header("Subject"),
            Some(email.content.subject.as_str())
        );
        assert_eq!(
            message.header("Message-ID"),
            Some(message_id(answer)),
            "{to}"
        );
        assert!(
            message
                .header("Content-Type")
                .is_some_and(|value| value.starts_with("multipart/alternative")),
            "{to}: {:?}",
            message.header("Content-Type")
        );
        assert_eq!(body(&message.text), email.content.text_body, "{to}");
        assert_eq!(body(&message.html), email.content.html_body, "{to}");
        let unsubscribe: Vec<(&str, String)> = email
            .unsubscribe
            .iter()
            .flat_map(|links| links.headers())
            .collect();
        for (name, value) in &unsubscribe {
            assert_eq!(message.header(name), Some(value.as_str()), "{to}: {name}");
        }
        if unsubscribe.is_empty() {
            assert_eq!(message.header("List-Unsubscribe"), None, "{to}");
        }
        assert_eq!(
            message.header("X-Newsletter-Delivery").map(str::to_owned),
            email.delivery.map(|delivery| delivery.to_string()),
            "{to}"
        );
    }
}

#[tokio::test]
async fn starttls_with_auth_delivers() {
    let server = SmtpServer::start(SmtpServerOptions {
        tls: SmtpTls::Starttls,
        auth: Some(("desk".into(), "s3cret".into())),
        ..Default::default()
    })
    .await;

    let answers = send(
        &provider(&server.settings()),
        &[newsletter_email("ada@example.com")],
    )
    .await
    .unwrap();

    message_id(&answers[0]);
    // The server takes no MAIL before STARTTLS nor before AUTH: that the
    // email arrived says both happened.
    server.wait_for_messages(1).await;
}

#[tokio::test]
async fn implicit_tls_delivers() {
    let server = SmtpServer::start(SmtpServerOptions {
        tls: SmtpTls::Implicit,
        ..Default::default()
    })
    .await;

    let answers = send(
        &provider(&server.settings()),
        &[newsletter_email("ada@example.com")],
    )
    .await
    .unwrap();

    message_id(&answers[0]);
    server.wait_for_messages(1).await;
}

#[tokio::test]
async fn a_self_signed_certificate_is_refused_unless_the_settings_accept_it() {
    let server = SmtpServer::start(SmtpServerOptions {
        tls: SmtpTls::Implicit,
        ..Default::default()
    })
    .await;
    let settings = SmtpSettings {
        accept_invalid_certificates: false,
        ..server.settings()
    };

    let failure = send(&provider(&settings), &[newsletter_email("ada@example.com")])
        .await
        .unwrap_err();

    assert!(failure.down, "{failure:?}");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_wrong_password_fails_the_call_as_down() {
    let server = SmtpServer::start(SmtpServerOptions {
        auth: Some(("desk".into(), "s3cret".into())),
        ..Default::default()
    })
    .await;
    let settings = SmtpSettings {
        password: Some(SecretString::from("wrong")),
        ..server.settings()
    };

    let failure = send(
        &provider(&settings),
        &[
            newsletter_email("ada@example.com"),
            newsletter_email("bob@example.com"),
        ],
    )
    .await
    .unwrap_err();

    assert!(failure.down, "{failure:?}");
    match &failure.answer {
        Answer::Passing { error, .. } => assert!(error.to_string().contains("535"), "{error}"),
        other => panic!("expected a passing answer, got {other:?}"),
    }
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_refused_recipient_is_refused_for_good_and_the_rest_of_its_batch_is_sent() {
    let server = SmtpServer::start(SmtpServerOptions {
        refuse: vec!["gone@example.com".into()],
        ..Default::default()
    })
    .await;

    let answers = send(
        &provider(&server.settings()),
        &[
            newsletter_email("ada@example.com"),
            newsletter_email("gone@example.com"),
            newsletter_email("bob@example.com"),
        ],
    )
    .await
    .unwrap();

    message_id(&answers[0]);
    match &answers[1] {
        Answer::Refused(reason) => assert!(
            reason.to_string()
                == "the SMTP server refused it (550 5.1.1): bad destination mailbox address",
            "{reason}"
        ),
        other => panic!("expected the refused recipient refused for good, got {other:?}"),
    }
    message_id(&answers[2]);
    let received = server.wait_for_messages(2).await;
    let mut recipients: Vec<&str> = received.iter().map(|m| m.rcpt_to.as_str()).collect();
    recipients.sort();
    assert_eq!(recipients, ["ada@example.com", "bob@example.com"]);
}

#[tokio::test]
async fn a_server_answering_451_gives_passing_or_throttled_as_its_reply_says() {
    for (case, reply, throttled) in [
        ("try later", "451 4.3.0 Try again later", false),
        (
            "rate limit",
            "451 4.7.1 Rate limit exceeded, slow down",
            true,
        ),
    ] {
        let server = SmtpServer::start(SmtpServerOptions {
            answer: Some(reply.into()),
            ..Default::default()
        })
        .await;

        let answers = send(
            &provider(&server.settings()),
            &[
                newsletter_email("ada@example.com"),
                newsletter_email("bob@example.com"),
            ],
        )
        .await
        .unwrap_or_else(|failure| panic!("{case}: the call failed as a whole: {failure:?}"));

        for answer in answers {
            match answer {
                Answer::Throttled { retry_after: None } if throttled => {}
                Answer::Passing {
                    error,
                    retry_after: None,
                } if !throttled => {
                    assert!(error.to_string().contains("451 4.3.0"), "{case}: {error}")
                }
                other => panic!("{case}: got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_server_refusing_sessions_with_421_is_down() {
    let server = SmtpServer::start(SmtpServerOptions {
        session_answer: Some("421 4.3.2 Service not available".into()),
        ..Default::default()
    })
    .await;

    let failure = send(
        &provider(&server.settings()),
        &[newsletter_email("ada@example.com")],
    )
    .await
    .unwrap_err();

    assert!(failure.down, "{failure:?}");
}

#[tokio::test]
async fn nothing_listening_fails_the_call_as_down_within_the_timeout() {
    // A port that was free a moment ago: nothing listens on it now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = unreachable_settings(port);
    let started = Instant::now();

    let failure = send(
        &provider(&settings),
        &[
            newsletter_email("ada@example.com"),
            newsletter_email("bob@example.com"),
        ],
    )
    .await
    .unwrap_err();

    assert!(failure.down, "{failure:?}");
    assert!(
        started.elapsed() < settings.timeout(),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_server_that_never_answers_fails_the_call_as_down_after_the_timeout() {
    // Accepts connections and says nothing: no greeting, ever.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = SmtpSettings {
        timeout_milliseconds: 300,
        ..unreachable_settings(listener.local_addr().unwrap().port())
    };
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();

    let failure = send(&provider(&settings), &[newsletter_email("ada@example.com")])
        .await
        .unwrap_err();

    let elapsed = started.elapsed();
    assert!(failure.down, "{failure:?}");
    assert!(
        elapsed >= settings.timeout() && elapsed < settings.timeout() + Duration::from_secs(5),
        "{elapsed:?}"
    );
    silent.abort();
}

fn unreachable_settings(port: u16) -> SmtpSettings {
    SmtpSettings {
        pool_size: 2,
        timeout_milliseconds: 5_000,
        ..plain_settings(port)
    }
}
