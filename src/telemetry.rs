//! Logs on stdout, in one of two shapes (`log_format`): one JSON object per
//! line for a log pipeline, the default everywhere but local runs; or plain
//! lines for a person at a terminal, the local default. Either way every line
//! carries the fields of the spans it happened in, so the request id that
//! `tracing-actix-web` puts on each request's root span appears on every line
//! logged while serving that request.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage};
use tracing::{Span, Subscriber};
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

use crate::configuration::LogFormat;

/// Builds a subscriber that writes JSON lines. `default_filter` applies
/// unless `RUST_LOG` is set.
pub fn get_subscriber<Sink>(default_filter: &str, sink: Sink) -> impl Subscriber + Send + Sync
where
    Sink: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    get_subscriber_in(LogFormat::Json, default_filter, sink)
}

/// Builds a subscriber that writes lines in `format`. `default_filter`
/// applies unless `RUST_LOG` is set.
pub fn get_subscriber_in<Sink>(
    format: LogFormat,
    default_filter: &str,
    sink: Sink,
) -> impl Subscriber + Send + Sync
where
    Sink: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    Registry::default()
        .with(filter)
        .with(log_lines(format, sink))
}

/// The layer that writes each event as one line in `format`.
fn log_lines<S, Sink>(format: LogFormat, sink: Sink) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    Sink: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(sink)
            .boxed(),
        // No colour codes: the same bytes whether the lines reach a
        // terminal, a file or a test, so they can be searched and copied.
        LogFormat::Text => fmt::layer().with_ansi(false).with_writer(sink).boxed(),
    }
}

/// Installs the subscriber for the whole process, and routes records of the
/// `log` crate (used by some dependencies) into it. Only the first call in a
/// process has an effect, so tests may call it as often as they like.
pub fn init_subscriber(subscriber: impl Subscriber + Send + Sync) {
    let _ = subscriber.try_init();
}

/// What a request that matched no route is logged under.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The root span of every request. It is `tracing-actix-web`'s default
/// without the path and the query string, and with the peer address rather
/// than forwarding headers a client can forge. A path and a query carry
/// capabilities (`/unsubscribe/{token}`, a confirmation link's token), and
/// whoever reads the logs must not be able to use them: a request is named
/// by the route it matched, its template, and one that matched none by
/// [`UNMATCHED_ROUTE`], whatever it asked for.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        let route = request
            .match_pattern()
            .unwrap_or_else(|| UNMATCHED_ROUTE.into());
        let peer = request
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route,
            http.client_ip = %peer,
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            request_id = %request_id,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let status = match outcome {
            Ok(response) => response.status().as_u16(),
            Err(e) => e.as_response_error().status_code().as_u16(),
        };
        // One access-log line per request, inside the request's span.
        span.in_scope(|| tracing::info!(http.status_code = status, "Finished the request"));
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// Writes an error followed by each of its causes, one per line: what an
/// error's `Debug` prints, so a logged error carries its whole story.
pub fn error_chain_fmt(
    e: &(dyn std::error::Error + 'static),
    f: &mut std::fmt::Formatter<'_>,
) -> std::fmt::Result {
    writeln!(f, "{e}")?;
    let mut current = e.source();
    while let Some(cause) = current {
        writeln!(f, "Caused by:\n\t{cause}")?;
        current = cause.source();
    }
    Ok(())
}

/// An error and its causes on one line, "error: cause: cause", for a log
/// field or a database column.
pub fn error_chain_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut current = e.source();
    while let Some(cause) = current {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        current = cause.source();
    }
    line
}
