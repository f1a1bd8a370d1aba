//! A stand-in for Postmark's `POST /email` that answers at once, for the
//! load benchmark (scripts/bench.sh). It appends the confirmation token of
//! each email it receives to a file, one per line, so the benchmark can then
//! confirm real subscriptions.
//!
//! `cargo run --release --example email_api_stub -- PORT TOKENS_FILE`

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::sync::Mutex;

use actix_web::{App, HttpResponse, HttpServer, web};

struct Tokens(Mutex<BufWriter<File>>);

async fn email(body: web::Json<serde_json::Value>, tokens: web::Data<Tokens>) -> HttpResponse {
    let text = body["TextBody"].as_str().unwrap_or_default();
    if let Some((_, rest)) = text.split_once("subscription_token=") {
        let token: String = rest
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        let mut file = tokens.0.lock().unwrap();
        let _ = writeln!(file, "{token}");
        // Flushed per line so the benchmark can read the file while this runs.
        let _ = file.flush();
    }
    HttpResponse::Ok().json(serde_json::json!({ "ErrorCode": 0, "Message": "OK" }))
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
            .route("/email", web::post().to(email))
    })
    .workers(1)
    .bind(("127.0.0.1", port.parse::<u16>().expect("PORT is a number")))?
    .run()
    .await
}
