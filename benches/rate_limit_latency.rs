//! The latency the rate limiter adds to a request: one per-IP check (one Lua
//! script call, as for a confirmation click) against the Redis of the
//! configuration, on loopback.
//!
//! `cargo bench --bench rate_limit_latency` (needs the Redis the tests use).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use newsletter::configuration::get_configuration;
use newsletter::rate_limit::{Decision, RateLimiter};

const CHECKS_PER_CLIENT: usize = 5_000;

async fn measure(limiter: Arc<RateLimiter>, clients: usize) -> Vec<Duration> {
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(CHECKS_PER_CLIENT);
                for n in 0..CHECKS_PER_CLIENT {
                    // A different address each time, as under real traffic.
                    let ip = IpAddr::V4(Ipv4Addr::from((client * CHECKS_PER_CLIENT + n) as u32));
                    let started = Instant::now();
                    let decision = limiter.check_confirmation(ip).await;
                    latencies.push(started.elapsed());
                    assert_eq!(decision, Decision::Allowed);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    all
}

fn micros(latencies: &[Duration], q: f64) -> f64 {
    latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    let mut settings = get_configuration().expect("Failed to read the configuration");
    settings.rate_limit.key_prefix = format!("bench:{}:", uuid::Uuid::new_v4().simple());
    // Long enough that every check is answered by Redis, not the fallback.
    settings.rate_limit.redis_timeout_milliseconds = 1_000;
    let limiter = Arc::new(RateLimiter::new(&settings.redis_uri, &settings.rate_limit).unwrap());
    measure(limiter.clone(), 1).await; // warm-up: connect, load the script

    println!("Latency of one per-IP check against Redis on loopback, in µs");
    println!(
        "{:>8} {:>8} {:>8} {:>8} {:>8}",
        "clients", "checks", "p50", "p99", "max"
    );
    for clients in [1, 16] {
        let latencies = measure(limiter.clone(), clients).await;
        println!(
            "{clients:>8} {:>8} {:>8.0} {:>8.0} {:>8.0}",
            latencies.len(),
            micros(&latencies, 0.50),
            micros(&latencies, 0.99),
            micros(&latencies, 1.0),
        );
    }

    // The keys expire by themselves; remove them now all the same.
    let client =
        redis::Client::open(secrecy::ExposeSecret::expose_secret(&settings.redis_uri)).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", settings.rate_limit.key_prefix))
        .query_async(&mut connection)
        .await
        .unwrap();
    for chunk in keys.chunks(1_000) {
        let _: () = redis::cmd("DEL")
            .arg(chunk)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}
