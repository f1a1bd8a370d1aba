//! A stand-in for Postmark's `POST /email/batch` that answers at once, for
//! the load benchmarks (scripts/bench.sh, scripts/bench_campaign.sh) and the
//! rolling update. It also takes `POST /email`, which releases from before
//! batching use, so a rolling update can start from one of them. It appends
//! the confirmation token of each email it receives to a file, one per line,
//! so the load can then confirm real subscriptions.
//!
//! Each accepted message gets a `MessageID` of its own, as Postmark gives
//! one. Given a third path, the stand-in also appends how long it spent on
//! each batch call, in microseconds from the request's headers to its
//! answer (reading and parsing the body included), one per line: the
//! server's share of a call's round trip.
//!
//! For the fault run (scripts/fault_run.sh) it can also misbehave: `POST
//! /fault/500`, `/fault/429` or `/fault/hang` makes every later send answer
//! 500, answer 429, or never answer, until `POST /fault/ok`. A send refused
//! or left hanging is not recorded: Postmark did not take it. With
//! `EMAIL_STUB_RECIPIENTS` set to a path, the `To` of every accepted message
//! is appended there, one per line.
//!
//! `cargo run --release --example email_api_stub -- PORT TOKENS_FILE [TIMINGS_FILE]`

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use actix_web::dev::Service;
use actix_web::{App, HttpResponse, HttpServer, web};
use serde::Deserialize;

struct Tokens(Mutex<BufWriter<File>>);

struct Timings(Mutex<BufWriter<File>>);

struct Recipients(Option<Mutex<BufWriter<File>>>);

/// How sends are answered: one of the `FAULT_*` values.
struct Fault(AtomicU8);

const FAULT_NONE: u8 = 0;
const FAULT_500: u8 = 1;
const FAULT_429: u8 = 2;
const FAULT_HANG: u8 = 3;

/// The one field the stand-in reads; the others are skipped unparsed,
/// which keeps a batch of large newsletter bodies cheap to take in.
#[derive(Deserialize)]
struct Message {
    #[serde(rename = "TextBody", default)]
    text_body: String,
    #[serde(rename = "To", default)]
    to: String,
}

async fn single(
    message: web::Json<Message>,
    tokens: web::Data<Tokens>,
    recipients: web::Data<Recipients>,
    fault: web::Data<Fault>,
) -> HttpResponse {
    match take(std::slice::from_ref(&message), &tokens, &recipients, &fault).await {
        Ok(()) => HttpResponse::Ok().json(accepted()),
        Err(refusal) => refusal,
    }
}

async fn batch(
    messages: web::Json<Vec<Message>>,
    tokens: web::Data<Tokens>,
    recipients: web::Data<Recipients>,
    fault: web::Data<Fault>,
) -> HttpResponse {
    match take(&messages, &tokens, &recipients, &fault).await {
        Ok(()) => HttpResponse::Ok().json(messages.iter().map(|_| accepted()).collect::<Vec<_>>()),
        Err(refusal) => refusal,
    }
}

/// Records `messages` as accepted, unless the current fault answers instead.
async fn take(
    messages: &[Message],
    tokens: &Tokens,
    recipients: &Recipients,
    fault: &Fault,
) -> Result<(), HttpResponse> {
    if let Some(refusal) = misbehave(fault).await {
        return Err(refusal);
    }
    record(messages, tokens, recipients);
    Ok(())
}

/// The answer the current fault gives instead of accepting, if any. A hang
/// lasts until the caller gives up and closes the connection, which drops
/// this future.
async fn misbehave(fault: &Fault) -> Option<HttpResponse> {
    match fault.0.load(Ordering::Relaxed) {
        FAULT_500 => Some(HttpResponse::InternalServerError().body("injected fault")),
        FAULT_429 => Some(HttpResponse::TooManyRequests().body("injected fault")),
        FAULT_HANG => std::future::pending().await,
        _ => None,
    }
}

async fn set_fault(kind: web::Path<String>, fault: web::Data<Fault>) -> HttpResponse {
    let value = match kind.as_str() {
        "ok" => FAULT_NONE,
        "500" => FAULT_500,
        "429" => FAULT_429,
        "hang" => FAULT_HANG,
        _ => return HttpResponse::NotFound().body("faults: ok, 500, 429, hang"),
    };
    fault.0.store(value, Ordering::Relaxed);
    HttpResponse::Ok().finish()
}

fn accepted() -> serde_json::Value {
    serde_json::json!({
        "ErrorCode": 0,
        "Message": "OK",
        "MessageID": uuid::Uuid::new_v4().to_string(),
    })
}

fn record(messages: &[Message], tokens: &Tokens, recipients: &Recipients) {
    if let Some(recipients) = &recipients.0 {
        let mut file = recipients.lock().unwrap();
        for message in messages {
            let _ = writeln!(file, "{}", message.to);
        }
        let _ = file.flush();
    }
    let mut file = tokens.0.lock().unwrap();
    for message in messages {
        if let Some((_, rest)) = message.text_body.split_once("subscription_token=") {
            let token: String = rest
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            let _ = writeln!(file, "{token}");
        }
    }
    // Flushed per request so the benchmark can read the file while this runs.
    let _ = file.flush();
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: email_api_stub PORT TOKENS_FILE [TIMINGS_FILE]");
        std::process::exit(2);
    };
    let append = |path: String| -> std::io::Result<BufWriter<File>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(BufWriter::new(file))
    };
    let tokens = web::Data::new(Tokens(Mutex::new(append(path)?)));
    let recipients = match std::env::var_os("EMAIL_STUB_RECIPIENTS") {
        Some(path) => Some(Mutex::new(append(path.to_string_lossy().into_owned())?)),
        None => None,
    };
    let recipients = web::Data::new(Recipients(recipients));
    let fault = web::Data::new(Fault(AtomicU8::new(FAULT_NONE)));
    let timings = match args.next() {
        Some(path) => Some(web::Data::new(Timings(Mutex::new(append(path)?)))),
        None => None,
    };
    HttpServer::new(move || {
        let timings = timings.clone();
        App::new()
            .app_data(tokens.clone())
            .app_data(recipients.clone())
            .app_data(fault.clone())
            // Postmark takes up to 50 MB per batch call; 500 newsletters of
            // 10 KB each are well over the default 32 KiB.
            .app_data(web::JsonConfig::default().limit(50 * 1024 * 1024))
            .wrap_fn(move |request, service| {
                let timed = timings.clone().filter(|_| request.path() == "/email/batch");
                let started = Instant::now();
                let answer = service.call(request);
                async move {
                    let answer = answer.await?;
                    if let Some(timings) = timed {
                        let micros = started.elapsed().as_micros();
                        let mut file = timings.0.lock().unwrap();
                        let _ = writeln!(file, "{micros}");
                        let _ = file.flush();
                    }
                    Ok(answer)
                }
            })
            .route("/email/batch", web::post().to(batch))
            .route("/email", web::post().to(single))
            .route("/fault/{kind}", web::post().to(set_fault))
    })
    .workers(1)
    .bind(("127.0.0.1", port.parse::<u16>().expect("PORT is a number")))?
    .run()
    .await
}
