//! `GET /admin/subscribers`: search, filter and page through the list,
//! newest first; `GET /admin/subscribers.csv`: the same selection, every
//! page of it, as a CSV file.
//!
//! The file has a column per custom attribute, in name order, after the
//! fixed ones; a subscriber without a value has an empty cell.
//! Either may be narrowed to one list (`list`, a list's id), and then the
//! status filter is about the status on that list; an id that is no
//! list's is refused with 400 rather than shown as an empty page, so that
//! a stale link does not pass for a list without readers.
//!
//! Pages are keyset-paginated ([`directory`]). The export walks the same
//! keys a chunk at a time (five thousand rows, or with a search the matches
//! among ten thousand) and streams each chunk as it is read:
//! neither the list nor the file is ever held whole, and no transaction
//! stays open while a slow client downloads.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use serde::Deserialize;

use super::paths::subscriber_path;
use crate::admin::actor::{actor_for, record};
use crate::admin::audit::Action;
use crate::admin::guard::SignedIn;
use crate::admin::pages::layout::nav;
use crate::db::Db;
use crate::pages::page;
use crate::rate_limit::RateLimiter;
use crate::routes::admin::pages::{ListOption, SubscriberRow, SubscribersPage, status_label};
use crate::subscribers::attributes;
use crate::subscribers::directory::{self, Chunk, Cursor, Row, Selection};
use crate::subscribers::lists::{self, List};
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};
use crate::web::spreadsheet::defuse;

/// Rows on a page of the list.
const PAGE_SIZE: i64 = 50;

/// Rows the export reads at a time (without a search).
const EXPORT_CHUNK: i64 = 5000;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParameters {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    /// A list's id: only the readers on it, `status` meaning theirs there.
    #[serde(default)]
    list: String,
    after: Option<String>,
    /// What the admin was sent here after; only known ones are shown, so
    /// that a link cannot put words on the page.
    notice: Option<String>,
}

/// Where a subscriber's erasure sends the admin: the list, saying so.
pub const ERASED_PATH: &str = "/admin/subscribers?notice=erased";

/// Up to `limit` subscribers of the selection, after `cursor`.
async fn read_page(
    db: &Db,
    selection: &Selection,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<Vec<Row>, ApiError> {
    db.transaction(async |tx| directory::page(tx, selection, cursor, limit).await)
        .await
        .step("read the subscribers")
}

/// Every list, for the filter's choices, after checking that the one the
/// selection names (if any) is among them.
async fn lists_for(db: &Db, selection: &Selection) -> Result<Vec<List>, ApiError> {
    let all = db
        .transaction(async |tx| lists::all(tx).await)
        .await
        .step("read the lists")?;
    match selection.list() {
        Some(id) if !all.iter().any(|list| list.id == id) => {
            Err(ApiError::BadRequest(format!("No list has the id {id}.")))
        }
        _ => Ok(all),
    }
}

#[utoipa::path(get, path = "/admin/subscribers", tag = "admin",
    params(ListParameters),
    responses(
        (status = 200, description = "A page of the list.", body = String, content_type = "text/html"),
        (status = 400, description = "A search, status, list or page address that cannot be read.", body = String, content_type = "text/plain"),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn subscribers(
    admin: SignedIn,
    parameters: web::Query<ListParameters>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ApiError> {
    let ListParameters {
        q,
        status,
        list,
        after,
        notice,
    } = parameters.into_inner();
    let selection = Selection::parse(&q, &status, &list).map_err(ApiError::BadRequest)?;
    let lists = lists_for(&db, &selection).await?;
    let cursor = after
        .as_deref()
        .map(Cursor::parse)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    // One more than a page: whether it exists says whether a next page does.
    let mut rows = read_page(&db, &selection, cursor, PAGE_SIZE + 1).await?;
    let more = rows.len() as i64 > PAGE_SIZE;
    rows.truncate(PAGE_SIZE as usize);
    let query_string = |after: Option<Cursor>| {
        let mut pairs = vec![("q", q.trim().to_owned()), ("status", status.clone())];
        if !list.trim().is_empty() {
            pairs.push(("list", list.trim().to_owned()));
        }
        if let Some(after) = after {
            pairs.push(("after", after.encode()));
        }
        serde_urlencoded::to_string(pairs).expect("strings always encode")
    };
    let next_page = more
        .then(|| rows.last().map(Row::cursor))
        .flatten()
        .map(|after| format!("/admin/subscribers?{}", query_string(Some(after))));
    let export = format!("/admin/subscribers.csv?{}", query_string(None));
    let rows = rows
        .into_iter()
        .map(|row| SubscriberRow {
            path: subscriber_path(row.id),
            email: row.email,
            name: row.name,
            status: status_label(&row.status),
            subscribed_at: row.subscribed_at.format("%Y-%m-%d %H:%M").to_string(),
            confirmed_at: row
                .confirmed_at
                .map(|at| at.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default(),
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        &SubscribersPage {
            newsletter: &admin.newsletter,
            nav: nav(&admin),
            query: q.trim(),
            status: &status,
            lists: lists
                .into_iter()
                .map(|each| ListOption {
                    selected: selection.list() == Some(each.id),
                    id: each.id.to_string(),
                    name: each.name,
                    archived: each.archived_at.is_some(),
                })
                .collect(),
            rows,
            next_page,
            export,
            notice: match notice.as_deref() {
                Some("erased") => Some(
                    "The subscriber was erased. If they had unsubscribed or were suppressed, \
                     only a hash of their address remains, on the suppression list.",
                ),
                _ => None,
            },
        },
    ))
}

/// The export's state between chunks.
struct Export {
    db: Db,
    selection: Selection,
    /// The custom attributes, in name order: a column each, after the
    /// fixed ones.
    attributes: Vec<String>,
    cursor: Option<Cursor>,
    header_written: bool,
    done: bool,
}

/// The export's next chunk of the selection.
async fn read_chunk(
    db: &Db,
    selection: &Selection,
    cursor: Option<Cursor>,
) -> Result<Chunk, ApiError> {
    db.transaction(async |tx| directory::chunk(tx, selection, cursor, EXPORT_CHUNK).await)
        .await
        .step("read the subscribers")
}

#[utoipa::path(get, path = "/admin/subscribers.csv", tag = "admin",
    params(ListParameters),
    responses(
        (status = 200, description = "The selection as a CSV file.", body = String, content_type = "text/csv"),
        (status = 400, description = "A search, status, list or page address that cannot be read.", body = String, content_type = "text/plain"),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn export_subscribers(
    request: HttpRequest,
    admin: SignedIn,
    parameters: web::Query<ListParameters>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let selection = Selection::parse(&parameters.q, &parameters.status, &parameters.list)
        .map_err(ApiError::BadRequest)?;
    lists_for(&db, &selection).await?;
    // Who took a copy of the list, and which part of it, is on record.
    let detail = selection.audited();
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    record(&db, &actor, Action::SubscribersExported, &detail).await?;
    let attributes = db
        .transaction(async |tx| attributes::definitions(tx).await)
        .await
        .step("read the attributes")?
        .into_iter()
        .map(|definition| definition.name)
        .collect();
    let mut export = Export {
        db: db.get_ref().clone(),
        selection,
        attributes,
        cursor: None,
        header_written: false,
        done: false,
    };
    // The first chunk is read before the answer starts: if the database is
    // down, the admin gets a 503 rather than a 200 and a truncated file.
    let first = export.next_chunk().await?;
    let rest = futures::stream::unfold(export, |mut export| async move {
        if export.done {
            return None;
        }
        let chunk = export.next_chunk().await;
        if chunk.is_err() {
            export.done = true;
        }
        Some((chunk, export))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename("subscribers.csv".into())],
        })
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .streaming(futures::stream::iter([Ok::<_, ApiError>(first)]).chain(rest)))
}

/// The file's first columns, before one per custom attribute.
const FIXED_COLUMNS: [&str; 5] = ["email", "name", "status", "subscribed_at", "confirmed_at"];

impl Export {
    /// The next rows as CSV, the header row first.
    async fn next_chunk(&mut self) -> Result<web::Bytes, ApiError> {
        let Chunk { rows, next } = read_chunk(&self.db, &self.selection, self.cursor).await?;
        self.done = next.is_none();
        self.cursor = next;
        self.write(&rows)
            .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("Failed to write CSV: {e}")))
    }

    /// `rows` as CSV, after the header row if it is not written yet. Each
    /// cell is written where it lies, none copied into a record first: the
    /// export writes nine million cells at a million subscribers.
    fn write(&mut self, rows: &[Row]) -> Result<web::Bytes, csv::Error> {
        let mut writer = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 128));
        if !self.header_written {
            let names = self.attributes.iter().map(String::as_str);
            for name in FIXED_COLUMNS.into_iter().chain(names) {
                writer.write_field(name)?;
            }
            writer.write_record(None::<&[u8]>)?;
            self.header_written = true;
        }
        for row in rows {
            let subscribed_at = row.subscribed_at.to_rfc3339();
            let confirmed_at = row
                .confirmed_at
                .map(|at| at.to_rfc3339())
                .unwrap_or_default();
            for cell in [&row.email, &row.name, &row.status] {
                writer.write_field(defuse(cell).as_bytes())?;
            }
            writer.write_field(&subscribed_at)?;
            writer.write_field(&confirmed_at)?;
            for name in &self.attributes {
                match row.attributes.get(name) {
                    Some(value) => {
                        writer.write_field(defuse(&attributes::display(value)).as_bytes())?
                    }
                    None => writer.write_field("")?,
                }
            }
            writer.write_record(None::<&[u8]>)?;
        }
        let bytes = writer.into_inner().map_err(|e| e.into_error())?;
        Ok(web::Bytes::from(bytes))
    }
}
