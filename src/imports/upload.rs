//! An import's file as it arrives over HTTP, for the upload page and
//! `POST /api/v1/imports` alike: written to a temporary file a chunk at a
//! time (never held whole: a million readers are tens of megabytes), up to
//! `imports.max_upload_bytes`; and, once the import has started, run to
//! its end apart from the request, the file removed when it ends.
//!
//! A process takes `imports.max_concurrent` uploads at once, each holding
//! an [`UploadSlot`] from its first byte to the end of its import: what
//! one process can put on its disk and take from the database is bounded,
//! and one more upload is answered 503 rather than queued. A process
//! killed mid-import leaves its file behind; the next one to start removes
//! such files ([`ImportUploads::new`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::web::Bytes;
use futures::{Stream, StreamExt};
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use uuid::Uuid;

use super::{ImportError, ImportRequest, Importer, Start, Started};
use crate::admin::audit::{self, Action, Actor};
use crate::configuration::ImportSettings;
use crate::db::Db;
use crate::domain::UnwantedCharacter;
use crate::web::error::{ApiError, DatabaseStep};

/// The longest file name kept, in characters: it is a label on the pages.
const MAX_FILE_NAME_CHARS: usize = 200;

/// How the files of uploads are named, so that those a killed process
/// left behind can be told from anything else in the directory.
const FILE_PREFIX: &str = "newsletter-import-";
const FILE_SUFFIX: &str = ".csv";

/// A left-behind file is one nobody has written for this long. An upload
/// writes its file as it arrives and its import reads it within seconds
/// (about six per million rows): a file this old belongs to no process,
/// even with several processes sharing the directory.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// What an upload needs, for the handlers' app data.
#[derive(Clone)]
pub struct ImportUploads {
    pub importer: Importer,
    /// The largest file taken, in bytes (`imports.max_upload_bytes`).
    pub max_bytes: u64,
    directory: Option<PathBuf>,
    slots: Arc<Semaphore>,
}

/// One of the uploads a process takes at once, held from the first byte
/// of the file to the end of its import.
pub struct UploadSlot(#[allow(dead_code)] OwnedSemaphorePermit);

/// How an upload's import began.
pub enum Accepted {
    /// Started, and running in the background.
    Started(Uuid),
    /// This file went onto this list before: nothing changed.
    AlreadyImported(Uuid),
    /// A second upload of a file being imported onto the list right now
    /// (its id, once its row exists): it leads to that import rather than
    /// waiting for it to end.
    Running(Option<Uuid>),
}

impl ImportUploads {
    /// The uploads of `settings`, once the files a killed process left in
    /// their directory are removed.
    pub fn new(importer: Importer, settings: &ImportSettings) -> Self {
        let directory = settings.upload_directory.clone();
        let searched = directory.clone().unwrap_or_else(std::env::temp_dir);
        remove_abandoned(&searched, SystemTime::now());
        Self {
            importer,
            max_bytes: settings.max_upload_bytes,
            directory,
            slots: Arc::new(Semaphore::new(settings.max_concurrent.max(1))),
        }
    }

    /// A place for one more upload, or [`ApiError::Busy`] when the process
    /// takes as many as it may: asked before the file is read.
    pub fn slot(&self) -> Result<UploadSlot, ApiError> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map(UploadSlot)
            .map_err(|_| {
                ApiError::Busy(
                    "As many imports as this server takes at once are running: try again when \
                 one of them is done."
                        .into(),
                )
            })
    }

    /// Writes `chunks` to a new file in the uploads' directory, under the
    /// size cap ([`save`]).
    pub async fn save<E>(
        &self,
        chunks: impl Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> Result<(TempPath, u64), SaveError<E>> {
        save(chunks, self.max_bytes, self.directory.as_deref()).await
    }

    /// Starts the import of `file` ([`Importer::start`]); when it is a new
    /// one, records who started it in the audit log (never a row of the
    /// file) and runs it in the background. `Ok(Err(_))`: the file or the
    /// list refused, with the reason.
    pub async fn accept(
        &self,
        db: &Db,
        actor: &Actor,
        request: ImportRequest,
        file: TempPath,
        slot: UploadSlot,
    ) -> Result<Result<Accepted, ImportError>, ApiError> {
        let started = match self.importer.start(request).await {
            Ok(Start::Ready(started)) => *started,
            Ok(Start::Done(done)) => return Ok(Ok(Accepted::AlreadyImported(done.id))),
            Ok(Start::Running(running)) => return Ok(Ok(Accepted::Running(running))),
            Err(refused) => return Ok(Err(refused)),
        };
        let detail = format!("{} (import {})", started.describe(), started.id);
        db.transaction(async |tx| audit::record(tx, actor, Action::ImportStarted, &detail).await)
            .await
            .step("record the import in the audit log")?;
        let id = started.id;
        run_in_background(started, file, slot);
        Ok(Ok(Accepted::Started(id)))
    }
}

/// The name a file was sent with, as a label: its last path component
/// (some browsers send a whole path), without control or invisible
/// characters, and not too long.
pub fn file_name(sent_as: &str) -> String {
    let last = sent_as.rsplit(['/', '\\']).next().unwrap_or_default();
    let name: String = UnwantedCharacter::remove_from(last)
        .trim()
        .chars()
        .take(MAX_FILE_NAME_CHARS)
        .collect();
    if name.is_empty() {
        "upload.csv".into()
    } else {
        name
    }
}

/// Why a file was not saved.
#[derive(Debug)]
pub enum SaveError<E> {
    /// Over the cap: the rest is not read.
    TooLarge,
    /// The request's body failed.
    Body(E),
    /// This side could not write it.
    Io(std::io::Error),
}

/// Writes `chunks` to a new temporary file in `directory` (the system's
/// when `None`) and says how long it was. The file is removed when the
/// returned path is dropped, here on any failure.
async fn save<E>(
    mut chunks: impl Stream<Item = Result<Bytes, E>> + Unpin,
    max_bytes: u64,
    directory: Option<&Path>,
) -> Result<(TempPath, u64), SaveError<E>> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(FILE_PREFIX).suffix(FILE_SUFFIX);
    let temporary = match directory {
        Some(directory) => builder.tempfile_in(directory),
        None => builder.tempfile(),
    }
    .map_err(SaveError::Io)?;
    let (file, path) = temporary.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut written = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(SaveError::Body)?;
        written += chunk.len() as u64;
        if written > max_bytes {
            return Err(SaveError::TooLarge);
        }
        file.write_all(&chunk).await.map_err(SaveError::Io)?;
    }
    file.flush().await.map_err(SaveError::Io)?;
    Ok((path, written))
}

/// Runs the import to its end, apart from the request; the file is
/// removed once it has ended, however it ended. Its outcome is on the
/// import's row: a failure is recorded there by the run. A server stopped
/// meanwhile leaves the import interrupted, to be finished by sending the
/// file again.
fn run_in_background(started: Started, file: TempPath, slot: UploadSlot) {
    let span = tracing::info_span!("Run an uploaded import", import = %started.id);
    tokio::spawn(
        async move {
            match started.run(|_| {}).await {
                Ok(record) => tracing::info!(
                    rows = record.rows_read,
                    added = record.memberships_added,
                    refused = record.refused,
                    "Import done"
                ),
                Err(e) => tracing::error!(error = ?e, "Import stopped"),
            }
            drop(file);
            drop(slot);
        }
        .instrument(span),
    );
}

/// Removes the files of uploads nobody has written for
/// [`ABANDONED_AFTER`] at `now`: left by a process killed mid-import, whose
/// own clean-up never ran. Logged, never fatal: a directory that cannot be
/// read costs disk, not service.
fn remove_abandoned(directory: &Path, now: SystemTime) {
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(error = %e, directory = %directory.display(), "Failed to look for abandoned uploads");
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(FILE_PREFIX) && name.ends_with(FILE_SUFFIX)) {
            continue;
        }
        let abandoned = entry
            .metadata()
            .and_then(|metadata| metadata.modified())
            .is_ok_and(|modified| {
                now.duration_since(modified)
                    .is_ok_and(|age| age >= ABANDONED_AFTER)
            });
        if !abandoned {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => {
                tracing::info!(file = %name, "Removed an upload a stopped process left behind")
            }
            Err(e) => {
                tracing::warn!(error = %e, file = %name, "Failed to remove an abandoned upload")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_is_kept_as_a_label_only() {
        for (sent_as, kept) in [
            ("readers.csv", "readers.csv"),
            ("C:\\Users\\ada\\readers.csv", "readers.csv"),
            ("/home/ada/readers.csv", "readers.csv"),
            ("read\u{202E}vsc.ers\0", "readvsc.ers"),
            ("", "upload.csv"),
            ("\u{200B}", "upload.csv"),
        ] {
            assert_eq!(file_name(sent_as), kept, "{sent_as:?}");
        }
        assert_eq!(file_name(&"a".repeat(500)).len(), MAX_FILE_NAME_CHARS);
    }

    #[test]
    fn only_uploads_nobody_wrote_for_an_hour_are_removed_at_start() {
        let directory = tempfile::tempdir().unwrap();
        let file = |name: &str| {
            let path = directory.path().join(name);
            std::fs::write(&path, "email\n").unwrap();
            path
        };
        let left_behind = file("newsletter-import-abc123.csv");
        let in_progress = file("newsletter-import-def456.csv");
        let someone_elses = file("readers.csv");
        let old = SystemTime::now() - ABANDONED_AFTER - Duration::from_secs(60);
        for path in [&left_behind, &someone_elses] {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        remove_abandoned(directory.path(), SystemTime::now());
        assert!(!left_behind.exists());
        assert!(in_progress.exists());
        assert!(someone_elses.exists());
    }
}
