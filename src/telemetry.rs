//! Structured logs: one JSON object per line on stdout. Every line carries the
//! fields of the spans it happened in, so the request id that
//! `tracing-actix-web` puts on each request's root span appears on every line
//! logged while serving that request.

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

/// Builds the subscriber. `default_filter` applies unless `RUST_LOG` is set.
pub fn get_subscriber<Sink>(default_filter: &str, sink: Sink) -> impl Subscriber + Send + Sync
where
    Sink: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(true)
        .with_writer(sink)
        .finish()
}

/// Installs the subscriber for the whole process, and routes records of the
/// `log` crate (used by some dependencies) into it. Only the first call in a
/// process has an effect, so tests may call it as often as they like.
pub fn init_subscriber(subscriber: impl Subscriber + Send + Sync) {
    let _ = subscriber.try_init();
}
