//! The listener for `GET /metrics`: a server of its own, on
//! `application.host` and `metrics.port`, apart from the public one, so
//! that the load balancer in front of the public port never exposes it and
//! a scrape never queues behind requests (or they behind it).
//!
//! One worker thread is plenty for a scraper every few seconds. The server
//! does not react to signals itself: whoever started it stops it, after the
//! rest of the process, so that a scrape during the shutdown still sees the
//! emails in flight being sent.

use std::net::{SocketAddr, TcpListener};

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use tokio::task::JoinHandle;

use super::Metrics;

/// What Prometheus is told the body is.
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The running metrics listener.
pub struct MetricsServer {
    address: SocketAddr,
    handle: ServerHandle,
    running: JoinHandle<std::io::Result<()>>,
}

impl MetricsServer {
    /// Binds `host:port` (0 picks a free port) and serves `metrics` there.
    pub fn start(host: &str, port: u16, metrics: Metrics) -> Result<Self, anyhow::Error> {
        let address = format!("{host}:{port}");
        let listener = TcpListener::bind(&address)
            .with_context(|| format!("Failed to bind the metrics listener on {address}"))?;
        let address = listener.local_addr()?;
        let metrics = web::Data::new(metrics);
        let server: Server = HttpServer::new(move || {
            App::new()
                .app_data(metrics.clone())
                .route("/metrics", web::get().to(scrape))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        let running = tokio::spawn(server);
        tracing::info!(%address, "Serving metrics");
        Ok(Self {
            address,
            handle,
            running,
        })
    }

    /// The address actually bound.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Lets a scrape in progress finish, then stops.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.running.await;
    }
}

async fn scrape(metrics: web::Data<Metrics>) -> HttpResponse {
    match metrics.render().await {
        Ok(text) => HttpResponse::Ok().content_type(OPENMETRICS_TEXT).body(text),
        Err(e) => {
            tracing::error!(error = %e, "Failed to encode the metrics");
            HttpResponse::InternalServerError().finish()
        }
    }
}
