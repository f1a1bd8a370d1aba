//! How long a confirmation email waits between the commit of the subscribe
//! transaction and the email API receiving it, on a healthy API.
//!
//! Runs the app (release build, two in-process delivery workers) against a
//! fresh database and a mock email API that records when each message
//! arrives. The commit happens between two instants, and the delay is given
//! from both: the outbox row's `enqueued_at` (`clock_timestamp()` at insert,
//! just before the commit: includes the commit itself) and the moment the
//! client has the 200 (just after the commit: a message that arrived sooner
//! counts as 0).
//!
//! `cargo bench --bench delivery_latency` (needs the Postgres the tests use).

#[allow(dead_code)]
#[path = "../tests/api/helpers.rs"]
mod helpers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use wiremock::{Mock, Request, Respond, ResponseTemplate, matchers::path};

/// Answers 200 at once and notes when each recipient's message arrived.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<HashMap<String, DateTime<Utc>>>>);

impl Respond for Arrivals {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let now = Utc::now();
        let batch: Vec<serde_json::Value> = serde_json::from_slice(&request.body).unwrap();
        let mut arrivals = self.0.lock().unwrap();
        for message in &batch {
            let to = message["To"].as_str().unwrap_or_default().to_owned();
            arrivals.insert(to, now);
        }
        helpers::accept_every_message(request)
    }
}

async fn run(app: &helpers::TestApp, label: &str, messages: usize, concurrency: usize) {
    sqlx::query("TRUNCATE email_outbox")
        .execute(&app.db_pool)
        .await
        .unwrap();
    let arrivals = Arrivals::default();
    app.email_server.reset().await;
    Mock::given(path(helpers::EMAIL_API))
        .respond_with(arrivals.clone())
        .mount(&app.email_server)
        .await;

    let mut answered: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut sent = 0;
    while sent < messages {
        let wave = concurrency.min(messages - sent);
        let requests = (sent..sent + wave).map(|i| async move {
            let email = format!("{label}{i}@example.com");
            let response = app
                .post_subscriptions(format!("name=Reader&email={}", email.replace('@', "%40")))
                .await;
            assert_eq!(response.status().as_u16(), 200);
            (email, Utc::now())
        });
        answered.extend(futures::future::join_all(requests).await);
        sent += wave;
    }
    helpers::eventually("every message to arrive", || async {
        (arrivals.0.lock().unwrap().len() == messages).then_some(())
    })
    .await;

    let enqueued: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT recipient, enqueued_at FROM email_outbox")
            .fetch_all(&app.db_pool)
            .await
            .unwrap();
    let arrived = arrivals.0.lock().unwrap();
    let from_insert = percentiles(enqueued.iter().map(|(to, at)| arrived[to] - *at));
    let from_answer = percentiles(answered.iter().map(|(to, at)| arrived[to] - *at));
    println!(
        "{label:<16} {messages:>6} {concurrency:>7} | {:>8.1} {:>8.1} {:>8.1} | {:>8.1} {:>8.1} {:>8.1}",
        from_insert[0],
        from_insert[1],
        from_insert[2],
        from_answer[0],
        from_answer[1],
        from_answer[2],
    );
}

/// p50, p99 and max in milliseconds; negative delays count as 0.
fn percentiles(delays: impl Iterator<Item = chrono::TimeDelta>) -> [f64; 3] {
    let mut delays: Vec<Duration> = delays.map(|d| d.to_std().unwrap_or_default()).collect();
    delays.sort();
    let pick = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
    [ms(pick(0.50)), ms(pick(0.99)), ms(*delays.last().unwrap())]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let app = helpers::spawn_app_with(|s| {
        s.delivery.sending.workers = 2;
        s.delivery.sending.poll_interval_milliseconds = 1000;
    })
    .await;
    println!("Delay from commit to the email API receiving the message, in ms");
    println!(
        "{:<16} {:>6} {:>7} | {:^26} | {:^26}",
        "", "", "", "from insert (upper bound)", "from 200 (lower bound)"
    );
    println!(
        "{:<16} {:>6} {:>7} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8}",
        "scenario", "emails", "clients", "p50", "p99", "max", "p50", "p99", "max"
    );
    run(&app, "sequential", 300, 1).await;
    run(&app, "concurrent", 2000, 16).await;
}
