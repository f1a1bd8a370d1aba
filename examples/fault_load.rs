//! The steady sign-up load of the fault run (scripts/fault_run.sh): CONCURRENCY
//! clients each post sign-ups, one after another, each for a new address,
//! for SECONDS. Every request is written to OUT_FILE as `address status`,
//! status 0 when no answer came (refused, reset, or no answer within 30 s),
//! so the run can check each address the service said it stored. A line of
//! progress goes to stderr every five seconds.
//!
//! `cargo run --example fault_load -- URL SECONDS CONCURRENCY OUT_FILE RUN_ID`

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Answers = Arc<Mutex<(BufWriter<File>, BTreeMap<u16, u64>)>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, seconds, concurrency, out, run] = args.as_slice() else {
        eprintln!("usage: fault_load URL SECONDS CONCURRENCY OUT_FILE RUN_ID");
        std::process::exit(2);
    };
    let deadline = Instant::now() + Duration::from_secs(seconds.parse().expect("SECONDS"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    let answers: Answers = Arc::new(Mutex::new((
        BufWriter::new(File::create(out)?),
        BTreeMap::new(),
    )));
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..concurrency.parse::<usize>().expect("CONCURRENCY") {
        let (client, answers) = (client.clone(), answers.clone());
        let (url, run) = (format!("{url}/subscriptions"), run.clone());
        clients.spawn(async move {
            let mut n = 0_u64;
            while Instant::now() < deadline {
                n += 1;
                let address = format!("fault-{run}-{id}-{n}@example.com");
                let status = match client
                    .post(&url)
                    .form(&[("name", "Fault Run"), ("email", address.as_str())])
                    .send()
                    .await
                {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0,
                };
                let mut answers = answers.lock().unwrap();
                let _ = writeln!(answers.0, "{address} {status}");
                *answers.1.entry(status).or_default() += 1;
            }
        });
    }
    let started = Instant::now();
    let mut progress = tokio::time::interval(Duration::from_secs(5));
    progress.tick().await;
    loop {
        tokio::select! {
            finished = clients.join_next() => {
                if finished.is_none() {
                    break;
                }
            }
            _ = progress.tick() => {
                let counts = answers.lock().unwrap().1.clone();
                eprintln!("load: {:>4}s {}", started.elapsed().as_secs(), summary(&counts));
            }
        }
    }
    let mut answers = answers.lock().unwrap();
    answers.0.flush()?;
    eprintln!("load: done {}", summary(&answers.1));
    Ok(())
}

/// `total=N 200=N 503=N …`
fn summary(counts: &BTreeMap<u16, u64>) -> String {
    let total: u64 = counts.values().sum();
    let by_status: Vec<String> = counts.iter().map(|(s, n)| format!("{s}={n}")).collect();
    format!("total={total} {}", by_status.join(" "))
}
