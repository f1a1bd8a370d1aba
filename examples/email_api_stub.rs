//! A stand-in for Postmark's `POST /email/batch` that answers at once, for
//! the load benchmark (scripts/bench.sh) and the rolling update. It also
//! takes `POST /email`, which releases from before batching use, so a
//! rolling update can start from one of them. It appends the confirmation
//! token of each email it receives to a file, one per line, so the load can
//! then confirm real subscriptions.
//!
//! `cargo run --release --example email_api_stub -- PORT TOKENS_FILE`

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::sync::Mutex;

use actix_web::{App, HttpResponse, HttpServer, web};

struct Tokens(Mutex<BufWriter<File>>);

async fn single(message: web::Json<serde_json::Value>, tokens: web::Data<Tokens>) -> HttpResponse {
    record_tokens(std::slice::from_ref(&message), &tokens);
    HttpResponse::Ok().json(serde_json::json!({ "ErrorCode": 0, "Message": "OK" }))
}

async fn batch(
    messages: web::Json<Vec<serde_json::Value>>,
    tokens: web::Data<Tokens>,
) -> HttpResponse {
    record_tokens(&messages, &tokens);
    let answers: Vec<_> = messages
        .iter()
        .map(|_| serde_json::json!({ "ErrorCode": 0, "Message": "OK" }))
        .collect();
    HttpResponse::Ok().json(answers)
}

fn record_tokens(messages: &[serde_json::Value], tokens: &Tokens) {
    let mut file = tokens.0.lock().unwrap();
    for message in messages {
        let text = message["TextBody"].as_str().unwrap_or_default();
        if let Some((_, rest)) = text.split_once("subscription_token=") {
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
        eprintln!("usage: email_api_stub PORT TOKENS_FILE");
        std::process::exit(2);
    };
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let tokens = web::Data::new(Tokens(Mutex::new(BufWriter::new(file))));
    HttpServer::new(move || {
        App::new()
            .app_data(tokens.clone())
            // A batch of 500 messages is well over the default 32 KiB.
            .app_data(web::JsonConfig::default().limit(8 * 1024 * 1024))
            .route("/email/batch", web::post().to(batch))
            .route("/email", web::post().to(single))
    })
    .workers(1)
    .bind(("127.0.0.1", port.parse::<u16>().expect("PORT is a number")))?
    .run()
    .await
}
