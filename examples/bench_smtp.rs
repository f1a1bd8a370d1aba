//! Sends emails through the SMTP provider to a local SMTP server, in
//! batches of 500 one call after another, as one delivery worker would, once
//! for each pool size (1, 4 and 16), and prints emails per second for each.
//! Each pool size starts with a fresh provider, so opening its sessions is
//! part of its time. scripts/bench_smtp.sh starts the server
//! (tests/smtp_server.py --discard) and runs this against it. With a third
//! argument, `starttls` or `implicit`, the sessions are encrypted (and the
//! server's certificate is not checked: it is a self-signed one).
//!
//! `cargo run --release --example bench_smtp -- PORT [EMAILS] [none|starttls|implicit]`

use std::time::Instant;

use newsletter::delivery::answer::Answer;
use newsletter::delivery::postmark::Sender;
use newsletter::delivery::provider::Provider;
use newsletter::delivery::smtp::{SmtpProvider, SmtpSettings, SmtpTls};
use newsletter::domain::{Newsletter, SubscriberEmail};
use newsletter::emails::{Email, EmailContent, UnsubscribeLinks};
use secrecy::SecretString;

const POOL_SIZES: [u32; 3] = [1, 4, 16];
const BATCH: usize = 500;

#[tokio::main]
async fn main() -> Result<(), anyhow::Error> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: bench_smtp PORT [EMAILS]"))?
        .parse()?;
    let count: usize = match args.next() {
        Some(count) => count.parse()?,
        None => 5000,
    };
    let tls = match args.next().as_deref() {
        None | Some("none") => SmtpTls::None,
        Some("starttls") => SmtpTls::Starttls,
        Some("implicit") => SmtpTls::Implicit,
        Some(other) => anyhow::bail!("TLS is none, starttls or implicit, not {other}"),
    };
    let emails = emails(count)?;
    let sender = Sender::new(
        &Newsletter::parse("Rust Weekly", "", "The Rust Desk").map_err(anyhow::Error::msg)?,
        &SubscriberEmail::parse("news@desk.example.com").map_err(anyhow::Error::msg)?,
    );
    println!("{count} emails in batches of {BATCH}, one call at a time, TLS {tls:?}");
    for pool_size in POOL_SIZES {
        let settings = SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            tls,
            username: None,
            password: None,
            pool_size,
            timeout_milliseconds: 10_000,
            accept_invalid_certificates: tls != SmtpTls::None,
        };
        let provider = SmtpProvider::new(&settings, sender.clone())?;
        let started = Instant::now();
        let mut sent = 0;
        for batch in emails.chunks(BATCH) {
            let batch: Vec<&Email> = batch.iter().collect();
            let answers = provider
                .send(&batch)
                .await
                .map_err(|failure| anyhow::anyhow!("a call failed: {failure:?}"))?;
            for answer in answers {
                match answer {
                    Answer::Sent { .. } => sent += 1,
                    other => anyhow::bail!("an email was not sent: {other:?}"),
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "pool {pool_size:>2}: {sent} emails in {seconds:6.2} s = {:7.0} emails/s",
            sent as f64 / seconds
        );
    }
    Ok(())
}

/// Newsletter emails of a realistic size: about 2 KB of text and 4 KB of
/// HTML, each with its own unsubscribe headers.
fn emails(count: usize) -> Result<Vec<Email>, anyhow::Error> {
    let keys =
        newsletter::keys::Keys::derive(&SecretString::from("0123456789abcdef0123456789abcdef"))
            .map_err(anyhow::Error::msg)?;
    let paragraph = "Rust's ownership rules make whole classes of bugs impossible. ";
    let text_body = paragraph.repeat(32);
    let html_body = format!("<p>{}</p>", paragraph.repeat(64));
    (0..count)
        .map(|n| {
            let token = keys.unsubscribe_token(uuid::Uuid::new_v4());
            Ok(Email {
                to: SubscriberEmail::parse(&format!("reader{n}@example.com"))
                    .map_err(anyhow::Error::msg)?,
                content: EmailContent {
                    subject: "Rust Weekly, issue 12".into(),
                    html_body: html_body.clone(),
                    text_body: text_body.clone(),
                },
                message_stream: "broadcast".into(),
                delivery: None,
                outbox_id: None,
                unsubscribe: Some(UnsubscribeLinks::new(
                    "https://news.example.com",
                    &token,
                    None,
                )),
            })
        })
        .collect()
}
