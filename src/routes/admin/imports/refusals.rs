//! `GET /admin/imports/{id}/refusals.csv`: every refused row an import
//! kept (up to [`crate::imports::store::MAX_REFUSALS_KEPT`]), with its line
//! and reason, as a CSV file, streamed a chunk at a time. The reasons may
//! quote the file's cells, typed by strangers: they are defused for
//! spreadsheets like the subscriber export's.

use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{HttpResponse, web};
use futures::StreamExt;
use uuid::Uuid;

use super::view::parse_import_id;
use crate::admin::guard::SignedIn;
use crate::db::Db;
use crate::imports::{Refusal, store};
use crate::web::error::{ApiError, DatabaseStep};
use crate::web::spreadsheet::defuse;

/// Refused rows read and written at a time.
const CHUNK: i64 = 1_000;

#[utoipa::path(get, path = "/admin/imports/{id}/refusals.csv", tag = "admin",
    params(("id" = String, Path, description = "The import's id.")),
    responses(
        (status = 200, description = "The import's refused rows, with their lines and reasons, as a CSV file.", body = String, content_type = "text/csv"),
        (status = 404, description = "No such import.", body = String, content_type = "text/plain"),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn import_refusals(
    _admin: SignedIn,
    id: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ApiError> {
    let missing = || ApiError::NotFound("No import has this address.".into());
    let id = parse_import_id(&id).ok_or_else(missing)?;
    let found = db
        .transaction(async |tx| store::find(tx, id).await)
        .await
        .step("read the import")?;
    if found.is_none() {
        return Err(missing());
    }
    let mut download = Download {
        db: db.get_ref().clone(),
        id,
        after_line: 0,
        done: false,
    };
    // The first chunk is read before the answer starts: if the database is
    // down, the admin gets a 503 rather than a 200 and a truncated file.
    let first = download.next_chunk(true).await?;
    let rest = futures::stream::unfold(download, |mut download| async move {
        if download.done {
            return None;
        }
        let chunk = download.next_chunk(false).await;
        if chunk.is_err() {
            download.done = true;
        }
        Some((chunk, download))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename("refused-rows.csv".into())],
        })
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .streaming(futures::stream::iter([Ok::<_, ApiError>(first)]).chain(rest)))
}

/// Where the download is.
struct Download {
    db: Db,
    id: Uuid,
    after_line: i64,
    done: bool,
}

impl Download {
    /// The next refused rows as CSV, after the header row when `first`.
    async fn next_chunk(&mut self, first: bool) -> Result<web::Bytes, ApiError> {
        let (id, after_line) = (self.id, self.after_line);
        let refusals = self
            .db
            .transaction(async |tx| store::refusals_after(tx, id, after_line, CHUNK).await)
            .await
            .step("read the refused rows")?;
        self.done = (refusals.len() as i64) < CHUNK;
        if let Some(last) = refusals.last() {
            self.after_line = i64::try_from(last.line).unwrap_or(i64::MAX);
        }
        write(&refusals, first)
            .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("Failed to write CSV: {e}")))
    }
}

fn write(refusals: &[Refusal], header: bool) -> Result<web::Bytes, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(refusals.len() * 96));
    if header {
        writer.write_record(["line", "reason"])?;
    }
    for refusal in refusals {
        writer.write_record([&refusal.line.to_string(), defuse(&refusal.reason).as_ref()])?;
    }
    let bytes = writer.into_inner().map_err(|e| e.into_error())?;
    Ok(web::Bytes::from(bytes))
}
