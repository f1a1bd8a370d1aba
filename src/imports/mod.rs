//! Importing subscribers from a CSV file onto a list, from the command line
//! (`newsletter import`) or the admin's upload. An import runs in four
//! steps, each named below, the file streamed from disk and never held
//! whole:
//!
//! 1. [`file`]: hash the file (the import's key with the list: the same
//!    file twice is one import) and check it is UTF-8;
//! 2. [`rows`] and [`staging`]: parse each record into a typed row or a
//!    refusal with its line, and COPY the rows into a staging table on the
//!    import's own connection, on a blocking thread that hands chunks to
//!    the COPY over a small channel (memory stays a few chunks deep);
//! 3. the merge ([`crate::subscribers::imports`]): one transaction,
//!    set-based, with the confirmation emails of readers not attested
//!    queued on the broadcast stream in the same commit;
//! 4. the record of it ([`store`]): counts, refused rows, and the state a
//!    watching page follows live (the row's trigger announces each change
//!    on the channel the issue pages use).
//!
//! A process killed at any point leaves no partial merge: the merge is one
//! transaction, the staging table dies with the connection, and the
//! import's row, left `reading` or `merging`, is run again from the file by
//! the next import of it.

pub mod cli;
pub mod columns;
pub mod file;
pub mod rows;
pub mod staging;
pub mod store;
pub mod upload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;
use uuid::Uuid;

pub use file::FileRefused;
pub use rows::{Parsed, Refusal, Row, Unreadable};
pub use store::ImportRecord;

use crate::configuration::{DatabaseSettings, Settings};
use crate::domain::{ConsentSource, Newsletter};
use crate::keys::Keys;
use crate::subscribers::{attributes, imports as merge, lists, welcome};
use staging::Encoder;
use store::{Begun, NewImport};

/// What an import needs of the service's settings.
#[derive(Clone)]
pub struct Importer {
    database: DatabaseSettings,
    keys: Keys,
    newsletter: Newsletter,
    base_url: String,
    broadcast_stream: String,
    messages_per_second: u32,
    token_lifetime: chrono::Duration,
}

impl Importer {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            database: settings.database.clone(),
            keys: Keys::derive(&settings.application.hmac_secret).map_err(anyhow::Error::msg)?,
            newsletter: settings.newsletter.parse()?,
            base_url: settings.application.base_url.clone(),
            broadcast_stream: settings.email_client.broadcast_stream.clone(),
            messages_per_second: settings.campaigns.messages_per_second,
            token_lifetime: settings.subscriptions.token_lifetime(),
        })
    }
}

impl Importer {
    /// The welcome emails' letterhead, on the broadcast stream: an import
    /// may welcome a million readers at once.
    fn welcome_letterhead(&self) -> welcome::Letterhead {
        welcome::Letterhead {
            newsletter: self.newsletter.clone(),
            base_url: self.base_url.clone(),
            keys: self.keys.clone(),
            message_stream: self.broadcast_stream.clone(),
        }
    }
}

/// An import asked for.
pub struct ImportRequest {
    /// The file, on disk: read twice (hash, then rows).
    pub path: PathBuf,
    /// What to call it on the pages (the uploaded file's name).
    pub file_name: String,
    pub list: ListRef,
    /// The admin attests the readers consented, and where: they are
    /// imported confirmed. Without it they are asked to confirm by email.
    pub consent: Option<ConsentSource>,
    /// Send the list's welcome email to those imported: at once to the
    /// readers an attested import confirms, and to the others when they
    /// confirm. Without it, none of them is sent it.
    pub welcome: bool,
    /// Who asked: an admin's username, or `cli`.
    pub started_by: String,
}

/// How a request names its list: the pages and the API by id (a list's
/// name may change between the form and the import), the command line by
/// name, as a person types it.
#[derive(Debug, Clone)]
pub enum ListRef {
    Id(Uuid),
    Name(String),
}

impl std::fmt::Display for ListRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListRef::Id(id) => write!(f, "with the id {id}"),
            ListRef::Name(name) => write!(f, "called \"{name}\""),
        }
    }
}

/// Why an import did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    File(#[from] FileRefused),
    #[error(transparent)]
    Unreadable(#[from] Unreadable),
    #[error("There is no list {0}.")]
    NoSuchList(ListRef),
    #[error("The list \"{0}\" is archived: it takes no new readers.")]
    ArchivedList(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ImportError {
    fn from(e: sqlx::Error) -> Self {
        Self::Other(anyhow::Error::new(e).context("The database failed during the import"))
    }
}

/// Where an import stands, for whoever watches it run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub rows_read: u64,
    pub rows_staged: u64,
    pub refused: u64,
    pub merging: bool,
}

/// How an import ended.
#[derive(Debug)]
pub enum Outcome {
    Imported(ImportRecord),
    /// This file was imported onto this list before: nothing changed.
    AlreadyImported(ImportRecord),
}

/// An import that is ready to run: its row exists, and its lock is held.
pub struct Started {
    pub id: Uuid,
    importer: Importer,
    request: ImportRequest,
    list_id: Uuid,
    /// The list's name as it is now, for the audit log.
    pub list_name: String,
    /// The import's own connection: its lock, its staging table.
    connection: PgConnection,
}

/// How [`Importer::start`] found an import of this file onto this list.
pub enum Start {
    /// Ready to run: its row exists, and its lock is held.
    Ready(Box<Started>),
    /// This file was imported onto this list before: nothing to do.
    Done(Box<ImportRecord>),
    /// Another process is importing this file onto this list right now
    /// (its id, once its row exists): a second upload of it does not wait
    /// for that one to end.
    Running(Option<Uuid>),
}

/// Whether a start waits for another run of the same file and list.
#[derive(Clone, Copy)]
enum Wait {
    /// The command line waits its turn, then finds the import done.
    Yes,
    /// The upload page answers at once with the running import's page.
    No,
}

impl Importer {
    /// Steps 1 and the import's row, for the upload page: checks the file
    /// and its header row, finds the list, and takes the import's lock if
    /// nobody holds it. `Err` for a file or list refused outright.
    pub async fn start(&self, request: ImportRequest) -> Result<Start, ImportError> {
        self.begin(request, Wait::No).await
    }

    async fn begin(&self, request: ImportRequest, wait: Wait) -> Result<Start, ImportError> {
        let checked = check_file(request.path.clone()).await?;
        let mut connection = self.connect().await?;
        // A header row that names no address is refused here too, before
        // the import has a row: the upload page answers it on the form.
        let definitions = attributes::definitions(&mut connection).await?;
        check_header(request.path.clone(), definitions).await?;
        let list = match &request.list {
            ListRef::Id(id) => lists::find(&mut connection, *id).await?,
            ListRef::Name(name) => lists::find_by_name(&mut connection, name).await?,
        }
        .ok_or_else(|| ImportError::NoSuchList(request.list.clone()))?;
        if list.archived_at.is_some() {
            return Err(ImportError::ArchivedList(list.name));
        }
        match wait {
            Wait::Yes => store::lock(&mut connection, &checked.sha256, list.id).await?,
            Wait::No => {
                if !store::try_lock(&mut connection, &checked.sha256, list.id).await? {
                    let running =
                        store::find_by_file(&mut connection, &checked.sha256, list.id).await?;
                    return Ok(Start::Running(running));
                }
            }
        }
        let begun = store::begin(
            &mut connection,
            &NewImport {
                sha256: &checked.sha256,
                list_id: list.id,
                file_name: &request.file_name,
                consent_source: request.consent.as_ref().map(AsRef::as_ref),
                welcome: request.welcome,
                started_by: &request.started_by,
            },
        )
        .await?;
        match begun {
            Begun::Done(id) => Ok(Start::Done(Box::new(
                store::find(&mut connection, id)
                    .await?
                    .context("the import vanished")?,
            ))),
            Begun::Run(id) => Ok(Start::Ready(Box::new(Started {
                id,
                importer: self.clone(),
                request,
                list_id: list.id,
                list_name: list.name,
                connection,
            }))),
        }
    }

    /// Starts and runs an import to its end.
    pub async fn run(
        &self,
        request: ImportRequest,
        on_progress: impl FnMut(&Progress),
    ) -> Result<Outcome, ImportError> {
        match self.begin(request, Wait::Yes).await? {
            Start::Done(done) => Ok(Outcome::AlreadyImported(*done)),
            Start::Ready(started) => started.run(on_progress).await.map(Outcome::Imported),
            Start::Running(_) => {
                unreachable!("a start that waits for the lock never finds it held")
            }
        }
    }

    /// A connection of the import's own, without the service's statement
    /// timeout: a merge of a million rows may rightly take longer. More
    /// local memory for the staging table and the merge's sorts, which are
    /// Postgres's, not this process's.
    async fn connect(&self) -> Result<PgConnection, ImportError> {
        let mut connection = PgConnection::connect_with(&self.database.with_db())
            .await
            .context("Failed to connect to the database")?;
        sqlx::query("SET temp_buffers = '256MB'")
            .execute(&mut connection)
            .await?;
        // A killed import's server process would otherwise run its
        // statement to the end, holding the import's lock, before it
        // noticed the client was gone: the next run would wait for it.
        sqlx::query("SET client_connection_check_interval = '1s'")
            .execute(&mut connection)
            .await?;
        Ok(connection)
    }
}

/// How many rows go into one chunk handed to the COPY.
const CHUNK_ROWS: usize = 5_000;
/// How often the import's row is told how far reading got.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// A chunk of the file, read: COPY text, and what it held.
struct Chunk {
    copy: Vec<u8>,
    rows_read: u64,
    staged: u64,
    refusals: Vec<Refusal>,
}

impl Started {
    /// Whether the readers' consent was attested, and what the file is
    /// called, for the audit log.
    pub fn describe(&self) -> String {
        format!(
            "{:?} onto the list {:?}, consent {}",
            self.request.file_name,
            self.list_name,
            if self.request.consent.is_some() {
                "attested"
            } else {
                "not attested"
            }
        )
    }

    /// Steps 2 to 4. A failure is recorded on the import's row (for the
    /// page) and returned.
    pub async fn run(
        mut self,
        mut on_progress: impl FnMut(&Progress),
    ) -> Result<ImportRecord, ImportError> {
        let mut progress_connection = match self.importer.connect().await {
            Ok(connection) => connection,
            Err(e) => {
                // Recorded on the connection the import already has, so
                // that its page says why rather than "interrupted".
                if let Err(also) =
                    store::mark_failed(&mut self.connection, self.id, &e.to_string()).await
                {
                    tracing::warn!(error = %also, "Could not record the import's failure");
                }
                return Err(e);
            }
        };
        let outcome = self
            .stage_and_merge(&mut progress_connection, &mut on_progress)
            .await;
        match outcome {
            Ok(()) => Ok(store::find(&mut progress_connection, self.id)
                .await?
                .context("the import vanished")?),
            Err(e) => {
                let failure = e.to_string();
                if let Err(also) =
                    store::mark_failed(&mut progress_connection, self.id, &failure).await
                {
                    tracing::warn!(error = %also, "Could not record the import's failure");
                }
                Err(e)
            }
        }
    }

    async fn stage_and_merge(
        &mut self,
        progress_connection: &mut PgConnection,
        on_progress: &mut impl FnMut(&Progress),
    ) -> Result<(), ImportError> {
        let mut progress = self.stage(progress_connection, on_progress).await?;
        store::mark_merging(progress_connection, self.id).await?;
        progress.merging = true;
        on_progress(&progress);
        self.merge().await
    }

    /// Step 2: the file's rows into the staging table.
    #[tracing::instrument(name = "Stage the file's rows", skip_all, fields(import = %self.id))]
    async fn stage(
        &mut self,
        progress_connection: &mut PgConnection,
        on_progress: &mut impl FnMut(&Progress),
    ) -> Result<Progress, ImportError> {
        let definitions = attributes::definitions(&mut self.connection).await?;
        store::create_staging(&mut self.connection).await?;
        let (chunks, mut received) = mpsc::channel::<Chunk>(4);
        let encoder = Encoder::new(self.importer.keys.clone(), self.request.consent.is_none());
        let path = self.request.path.clone();
        let reader =
            tokio::task::spawn_blocking(move || read_file(path, definitions, encoder, chunks));

        let mut progress = Progress::default();
        let mut told = Instant::now();
        let mut copy = store::copy_in(&mut self.connection).await?;
        while let Some(chunk) = received.recv().await {
            if let Err(e) = copy.send(chunk.copy).await {
                // The reader stops once its channel closes.
                drop(received);
                let _ = reader.await;
                return Err(e.into());
            }
            progress.rows_read += chunk.rows_read;
            progress.rows_staged += chunk.staged;
            progress.refused += chunk.refusals.len() as u64;
            store::keep_refusals(progress_connection, self.id, &chunk.refusals).await?;
            if told.elapsed() >= PROGRESS_EVERY {
                told = Instant::now();
                tell(progress_connection, self.id, &progress).await?;
                on_progress(&progress);
            }
        }
        match reader.await.context("The file's reader stopped")? {
            Ok(()) => {
                copy.finish().await?;
            }
            Err(e) => {
                copy.abort("the file could not be read").await?;
                return Err(e.into());
            }
        }
        tell(progress_connection, self.id, &progress).await?;
        on_progress(&progress);
        // The merge's joins are planned from the staging table's statistics.
        sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {}", merge::STAGING)))
            .execute(&mut self.connection)
            .await?;
        Ok(progress)
    }

    /// Steps 3 and 4, in one transaction.
    #[tracing::instrument(name = "Merge the import", skip_all, fields(import = %self.id))]
    async fn merge(&mut self) -> Result<(), ImportError> {
        let importer = &self.importer;
        let options = merge::MergeOptions {
            import_id: self.id,
            list_id: self.list_id,
            attested: self.request.consent.is_some(),
            token_expires_at: chrono::Utc::now() + importer.token_lifetime,
        };
        let mut transaction = self.connection.begin().await?;
        sqlx::query("SET LOCAL work_mem = '64MB'")
            .execute(&mut *transaction)
            .await?;
        let merged = merge::merge(&mut transaction, &options).await?;
        let queued = if merged.confirmations > 0 {
            crate::outbox::store::insert_spread(
                &mut transaction,
                &crate::emails::confirmation_for_many(&importer.newsletter, &importer.base_url),
                &importer.broadcast_stream,
                merge::CONFIRMATIONS_SQL,
                importer.messages_per_second,
            )
            .await?
        } else {
            0
        };
        let welcomed = if self.request.welcome && options.attested {
            welcome::queue_for_import(
                &mut transaction,
                &importer.welcome_letterhead(),
                self.id,
                self.list_id,
                importer.messages_per_second,
            )
            .await?
        } else {
            0
        };
        store::finish(&mut transaction, self.id, &merged, queued, welcomed).await?;
        transaction.commit().await?;
        store::drop_staging(&mut self.connection).await?;
        Ok(())
    }
}

async fn tell(
    connection: &mut PgConnection,
    id: Uuid,
    progress: &Progress,
) -> Result<(), sqlx::Error> {
    store::record_reading(
        connection,
        id,
        progress.rows_read,
        progress.rows_staged,
        progress.refused,
    )
    .await
}

async fn check_file(path: PathBuf) -> Result<file::FileCheck, ImportError> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(FileRefused::Io)?;
        file::check(file)
    })
    .await
    .context("The file's check stopped")?
    .map_err(ImportError::File)
}

async fn check_header(
    path: PathBuf,
    definitions: Vec<attributes::Definition>,
) -> Result<(), ImportError> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        rows::Rows::new(file, definitions).map(drop)
    })
    .await
    .context("The header's check stopped")?
    .map_err(ImportError::Unreadable)
}

/// The blocking side of step 2: reads the rows and hands them over in
/// chunks; returns once the file ends, or the receiver is gone.
fn read_file(
    path: PathBuf,
    definitions: Vec<attributes::Definition>,
    encoder: Encoder,
    chunks: mpsc::Sender<Chunk>,
) -> Result<(), Unreadable> {
    let file = std::fs::File::open(&path)?;
    let mut rows = rows::Rows::new(file, definitions)?;
    let fresh = || Chunk {
        copy: Vec::with_capacity(CHUNK_ROWS * 160),
        rows_read: 0,
        staged: 0,
        refusals: Vec::new(),
    };
    let mut chunk = fresh();
    while let Some(parsed) = rows.next_row()? {
        chunk.rows_read += 1;
        match parsed {
            Parsed::Row(row) => {
                encoder.write(&row, &mut chunk.copy);
                chunk.staged += 1;
            }
            Parsed::Refused(refusal) => chunk.refusals.push(refusal),
        }
        if chunk.rows_read as usize >= CHUNK_ROWS
            && chunks
                .blocking_send(std::mem::replace(&mut chunk, fresh()))
                .is_err()
        {
            // The import stopped reading: nothing more to hand over.
            return Ok(());
        }
    }
    if chunk.rows_read > 0 {
        let _ = chunks.blocking_send(chunk);
    }
    Ok(())
}
