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
//! `cargo run --release --example email_api_stub -- PORT TOKENS_FILE [TIMINGS_FILE]`

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::sync::Mutex;
use std::time::Instant;

use actix_web::dev::Service;
use actix_web::{App, HttpResponse, HttpServer, web};
use serde::Deserialize;

struct Tokens(Mutex<BufWriter<File>>);

struct Timings(Mutex<BufWriter<File>>);

/// The one field the stand-in reads; the others are skipped unparsed,
/// which keeps a batch of large newsletter bodies cheap to take in.
#[derive(Deserialize)]
struct Message {
    #[serde(rename = "TextBody", default)]
    text_body: String,
}

async fn single(message: web::Json<Message>, tokens: web::Data<Tokens>) -> HttpResponse {
    record_tokens(std::slice::from_ref(&message), &tokens);
    HttpResponse::Ok().json(accepted())
}

async fn batch(messages: web::Json<Vec<Message>>, tokens: web::Data<Tokens>) -> HttpResponse {
    record_tokens(&messages, &tokens);
    let answers: Vec<_> = messages.iter().map(|_| accepted()).collect();
    HttpResponse::Ok().json(answers)
}

fn accepted() -> serde_json::Value {
    serde_json::json!({
        "ErrorCode": 0,
        "Message": "OK",
        "MessageID": uuid::Uuid::new_v4().to_string(),
    })
}

fn record_tokens(messages: &[Message], tokens: &Tokens) {
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
    let timings = match args.next() {
        Some(path) => Some(web::Data::new(Timings(Mutex::new(append(path)?)))),
        None => None,
    };
    HttpServer::new(move || {
        let timings = timings.clone();
        App::new()
            .app_data(tokens.clone())
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
    })
    .workers(1)
    .bind(("127.0.0.1", port.parse::<u16>().expect("PORT is a number")))?
    .run()
    .await
}
