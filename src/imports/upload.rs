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

use super::Started;

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
pub fn run_in_background(started: Started, file: TempPath) {
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
