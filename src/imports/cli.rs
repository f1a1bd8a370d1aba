//! `newsletter import FILE --list NAME [--consent-attested SOURCE]
//! [--welcome]`: an import from the server's shell, with its progress on
//! standard error and its report on standard output. Exits non-zero when
//! the import fails or the file or list is refused; refused rows are part
//! of a successful import's report, not a failure.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection};

use super::{ImportRecord, ImportRequest, Importer, ListRef, Outcome, store};
use crate::configuration::Settings;
use crate::domain::ConsentSource;

pub const USAGE: &str = "\
Usage:
  newsletter import FILE --list NAME [--consent-attested SOURCE] [--welcome]
            Import the subscribers of a CSV file (UTF-8) onto a list.
            Without --consent-attested they are asked to confirm by email;
            with it they are imported confirmed, SOURCE recorded as where
            their consent came from. With --welcome the list's welcome
            email goes to the readers confirmed here (on the broadcast
            stream, at its rate), and to the others once they confirm;
            without it, to none of them.";

/// How many refused rows the report prints.
const REFUSALS_PRINTED: i64 = 20;

struct Arguments {
    file: PathBuf,
    list: String,
    consent: Option<ConsentSource>,
    welcome: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Arguments> {
    let mut file = None;
    let mut list = None;
    let mut consent = None;
    let mut welcome = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => list = Some(args.next().context("--list takes a list's name")?.clone()),
            "--consent-attested" => {
                let source = args
                    .next()
                    .context("--consent-attested takes where the consent came from")?;
                consent = Some(ConsentSource::parse(source).map_err(anyhow::Error::msg)?);
            }
            "--welcome" => welcome = true,
            other if other.starts_with("--") => bail!("Unknown option {other}.\n\n{USAGE}"),
            path if file.is_none() => file = Some(PathBuf::from(path)),
            extra => bail!("One file at a time: {extra} is one too many.\n\n{USAGE}"),
        }
    }
    Ok(Arguments {
        file: file.with_context(|| format!("Name the file to import.\n\n{USAGE}"))?,
        list: list.with_context(|| format!("Name the list with --list.\n\n{USAGE}"))?,
        consent,
        welcome,
    })
}

pub async fn run(settings: &Settings, args: &[String]) -> anyhow::Result<()> {
    let arguments = parse(args)?;
    let importer = Importer::from_settings(settings)?;
    let file_name = arguments.file.file_name().map_or_else(
        || "file".to_owned(),
        |name| name.to_string_lossy().into_owned(),
    );
    let request = ImportRequest {
        path: arguments.file,
        file_name,
        list: ListRef::Name(arguments.list),
        consent: arguments.consent,
        welcome: arguments.welcome,
        started_by: "the command line".into(),
    };
    let outcome = importer
        .run(request, |progress| {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(
                stderr,
                "{} rows read, {} staged, {} refused{}",
                progress.rows_read,
                progress.rows_staged,
                progress.refused,
                if progress.merging { "; merging" } else { "" }
            );
        })
        .await?;
    match outcome {
        Outcome::AlreadyImported(record) => {
            println!(
                "Already imported: this file went onto the list \"{}\" on {}. Nothing changed.",
                record.list_name,
                record.created_at.format("%Y-%m-%d %H:%M UTC")
            );
        }
        Outcome::Imported(record) => report(settings, &record).await?,
    }
    Ok(())
}

async fn report(settings: &Settings, record: &ImportRecord) -> anyhow::Result<()> {
    println!("Imported onto the list \"{}\":", record.list_name);
    println!("  {} rows read", record.rows_read);
    println!("  {} new subscribers", record.subscribers_added);
    println!("  {} added to the list", record.memberships_added);
    println!(
        "  {} already on the list, left as they were",
        record.already_on_list
    );
    match &record.consent_source {
        Some(source) => println!("  imported confirmed; consent attested: {source}"),
        None => println!(
            "  {} confirmation emails queued on the broadcast stream",
            record.confirmations_queued
        ),
    }
    if record.welcome {
        match &record.consent_source {
            Some(_) => println!(
                "  {} welcome emails queued on the broadcast stream",
                record.welcomes_queued
            ),
            None => println!("  welcome emails: sent to each reader once they confirm"),
        }
    }
    println!("  {} rows refused", record.refused);
    if record.refused > 0 {
        let mut connection = PgConnection::connect_with(&settings.database.with_db()).await?;
        let refusals = store::refusals(&mut connection, record.id, REFUSALS_PRINTED).await?;
        for refusal in &refusals {
            println!("    line {}: {}", refusal.line, refusal.reason);
        }
        if record.refused > refusals.len() as i64 {
            println!(
                "    ... and {} more",
                record.refused - refusals.len() as i64
            );
        }
    }
    Ok(())
}
