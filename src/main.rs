//! The `newsletter` binary.
//!
//! - `newsletter` (or `newsletter serve`): serve HTTP until SIGTERM.
//! - `newsletter migrate`: create the database if needed and apply pending
//!   migrations, then exit. Deploy jobs run this before new instances start.
//! - `newsletter worker`: only deliver queued email and newsletter issues,
//!   and run the retention job when it is enabled, until SIGTERM; serves
//!   `GET /metrics` like `serve` does. For
//!   scaling delivery apart from the web tier (set
//!   `APP_DELIVERY__RUN_IN_SERVER=false` on the servers then).
//! - `newsletter retention`: run the retention job once, now, whenever the
//!   last run was; still never beside a run in another process.
//! - `newsletter import FILE --list NAME [--consent-attested SOURCE]`:
//!   import subscribers from a CSV file; see `newsletter::imports::cli`.
//! - `newsletter admin create|reset-password --username NAME`: add an admin,
//!   or give one a new password; `newsletter admin reseal-totp`: seal every
//!   TOTP secret under the current key; see `newsletter::admin::cli`.

use anyhow::Context;
use newsletter::admin;
use newsletter::configuration::{Settings, get_configuration};
use newsletter::db;
use newsletter::migrate;
use newsletter::outbox;
use newsletter::retention::{Outcome, Retention, When};
use newsletter::startup::{self, Application, Background, metrics_server};
use newsletter::telemetry::{get_subscriber_in, init_subscriber};
use tokio_util::sync::CancellationToken;

const USAGE: &str = "\
Usage: newsletter [COMMAND]

Commands:
  serve     Serve HTTP (the default)
  migrate   Create the database if missing and apply pending migrations
  worker    Deliver queued email (and run the retention job, if enabled),
            without serving HTTP
  retention Run the retention job once now, whenever it last ran; exits
            with status 75 if another process is running it
  outbox requeue-failed
            Queue every failed email that still has its content to be sent
            again, with a fresh count of attempts
  import FILE --list NAME [--consent-attested SOURCE] [--welcome]
            Import the subscribers of a CSV file onto a list; without
            --consent-attested they are asked to confirm by email
  admin create --username NAME [--email ADDRESS]
            Add an admin; reads the password from standard input
  admin reset-password --username NAME
            Give an admin a new password, read from standard input, and
            end their sessions
  admin reseal-totp
            Seal every admin's TOTP secret under the current
            admin.totp_key (after a key rotation)

Settings come from ./configuration and APP_* environment variables;
APP_ENVIRONMENT selects local (default) or production.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let command = args.get(1).cloned();
    if matches!(command.as_deref(), Some("-h" | "--help" | "help")) {
        println!("{USAGE}");
        return Ok(());
    }

    // Read first: the settings say which shape log lines take.
    let settings = get_configuration().context("Failed to read the configuration")?;
    // Postgres notices ("relation already exists, skipping") are not news.
    init_subscriber(get_subscriber_in(
        settings.log_format,
        "info,sqlx::postgres::notice=warn",
        std::io::stdout,
    ));

    match command.as_deref() {
        None | Some("serve") => {
            let application = Application::build(settings).await?;
            application.run_until_stopped().await?;
        }
        Some("migrate") => {
            migrate::ensure_database_exists(&settings.database).await?;
            let pool = db::migration_pool(&settings.database);
            migrate::run_pending(&pool).await?;
        }
        Some("outbox") if args.get(2).map(String::as_str) == Some("requeue-failed") => {
            let db = db::Db::connect_lazy(&settings.database, 1);
            let done = outbox::requeue_failed(db.pool())
                .await
                .context("Failed to queue the failed emails again")?;
            println!("{} failed emails queued to be sent again.", done.requeued);
            if done.without_body > 0 {
                println!(
                    "{} failed emails were left as they are: their content was cleared \
                     (by retention after retention.body_days, or by an earlier release), \
                     so there is nothing to send.",
                    done.without_body
                );
            }
        }
        // API tokens have their own module, with the API they open.
        Some("admin") if args.get(2).map(String::as_str) == Some("token") => {
            newsletter::api::cli::run(&settings, &args[3..]).await?
        }
        Some("admin") => admin::cli::run(&settings, &args[2..]).await?,
        Some("import") => newsletter::imports::cli::run(&settings, &args[2..]).await?,
        Some("retention") => run_retention_now(&settings).await?,
        Some("worker") => {
            // Watched before anything starts: a SIGTERM that arrives while
            // the workers start still stops them cleanly.
            let terminated = termination()?;
            let metrics = startup::metrics(&settings);
            let metrics_server = metrics_server(&settings, &metrics)?;
            let background = Background::start(&settings, &metrics, true)?;
            terminated.await;
            tracing::info!("Stopping: finishing the emails in flight");
            background.stop().await;
            metrics_server.stop().await;
        }
        Some(other) => {
            eprintln!("Unknown command `{other}`.\n\n{USAGE}");
            std::process::exit(2);
        }
    }
    Ok(())
}

/// `newsletter retention`: one run now, its progress in the log lines, its
/// counts at the end. Ctrl-C stops it between two batches.
async fn run_retention_now(settings: &Settings) -> anyhow::Result<()> {
    let db = db::Db::connect_lazy(&settings.database, 1);
    let retention = Retention::new(db, settings.retention.clone())?;
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    let terminated = termination()?;
    tokio::spawn(async move {
        terminated.await;
        stopper.cancel();
    });
    match retention
        .run(When::Now, &stop)
        .await
        .context("The retention run failed")?
    {
        Outcome::Finished(report) => println!("Retention run finished:\n{report}"),
        Outcome::Stopped(report) => println!("Retention run stopped early:\n{report}"),
        Outcome::Busy => {
            eprintln!("Another process is running retention now; nothing was done.");
            std::process::exit(75);
        }
        // A run asked for now is never early; said plainly all the same.
        Outcome::NotDue => println!("Retention is not due; nothing was done."),
    }
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what platforms send on redeploy).
/// Both are watched from this call on, not from the first wait: the
/// default action of either ends the process at once.
fn termination() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
