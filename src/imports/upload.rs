//! An import's file as it arrives over HTTP, for the upload page and
//! `POST /api/v1/imports` alike: written to a temporary file a chunk at a
//! time (never held whole: a million readers are tens of megabytes), up to
//! `imports.max_upload_bytes`; and, once the import has started, run to
//! its end apart from the request, the file removed when it ends.

use actix_web::web::Bytes;
use futures::{Stream, StreamExt};
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use uuid::Uuid;

use super::{ImportError, ImportRequest, Importer, Start, Started};
use crate::admin::audit::{self, Action, Actor};
use crate::db::Db;
use crate::domain::UnwantedCharacter;
use crate::web::error::{ApiError, DatabaseStep};

/// The longest file name kept, in characters: it is a label on the pages.
const MAX_FILE_NAME_CHARS: usize = 200;

/// What an upload needs, for the handlers' app data.
#[derive(Clone)]
pub struct ImportUploads {
    pub importer: Importer,
    /// The largest file taken, in bytes (`imports.max_upload_bytes`).
    pub max_bytes: u64,
}

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
        run_in_background(started, file);
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

/// Writes `chunks` to a new temporary file and says how long it was. The
/// file is removed when the returned path is dropped, here on any failure.
pub async fn save<E>(
    mut chunks: impl Stream<Item = Result<Bytes, E>> + Unpin,
    max_bytes: u64,
) -> Result<(TempPath, u64), SaveError<E>> {
    let temporary = tempfile::Builder::new()
        .prefix("newsletter-import-")
        .suffix(".csv")
        .tempfile()
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
fn run_in_background(started: Started, file: TempPath) {
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
        }
        .instrument(span),
    );
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
}
