//! `POST /api/v1/imports` (publish): an import of a CSV file onto a list,
//! the file as the request's body (`Content-Type: text/csv`) and the
//! options as query parameters. The body is written to a temporary file as
//! it arrives, up to `imports.max_upload_bytes` as on the upload page
//! (413 past it), and the import starts through the page's own step
//! ([`ImportUploads::accept`]): 202 and its address, where
//! `GET /api/v1/imports/{id}` (read) says how far it got. The same file
//! onto the same list again answers 200 with the earlier import, which
//! changed nothing; while that file is being imported, 202 with the import
//! already running.
//!
//! It takes the `publish` scope, not `write`: one request can have an
//! email sent to every address in the file (a confirmation, or a welcome
//! on attested consent), which is what publishing an issue does. A `write`
//! token signs readers up one at a time, under its sign-up budget.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::guard::ApiToken;
use crate::api::problem::{FieldError, Problem};
use crate::api::tokens::Scope;
use crate::db::Db;
use crate::domain::ConsentSource;
use crate::imports::store;
use crate::imports::upload::{Accepted, ImportUploads, SaveError, file_name};
use crate::imports::{FileRefused, ImportError, ImportRecord, ImportRequest, ListRef, Unreadable};
use crate::subscribers::lists;
use crate::web::error::DatabaseStep;

/// An import, where it stands.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "id": "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f",
    "list_id": "0b9d5a0e-3c1f-4a53-9f0e-6f1b3c2d4e5f",
    "list_name": "Weekly",
    "file_name": "readers.csv",
    "state": "done",
    "consent_attested": true,
    "welcome": false,
    "rows_read": 1000,
    "rows_staged": 998,
    "subscribers_added": 990,
    "memberships_added": 995,
    "already_on_list": 3,
    "confirmations_queued": 0,
    "welcomes_queued": 0,
    "refused": 2,
    "failure": null,
    "finished": true,
    "interrupted": false,
    "created_at": "2027-01-16T09:00:00Z",
    "finished_at": "2027-01-16T09:00:04Z"
}))]
pub struct ImportBody {
    pub id: Uuid,
    pub list_id: Uuid,
    pub list_name: String,
    pub file_name: String,
    /// `reading`, `merging`, `done`, `failed`, or `interrupted` (its
    /// process stopped: send the file again to finish it).
    pub state: &'static str,
    /// Imported confirmed, their consent attested; otherwise each is asked
    /// to confirm by email.
    pub consent_attested: bool,
    pub welcome: bool,
    pub rows_read: i64,
    pub rows_staged: i64,
    pub subscribers_added: i64,
    pub memberships_added: i64,
    pub already_on_list: i64,
    pub confirmations_queued: i64,
    pub welcomes_queued: i64,
    /// Rows refused, each with its line and reason on the import's page.
    pub refused: i64,
    /// Why it failed, when it did.
    pub failure: Option<String>,
    /// Nothing changes any more unless the file is sent again.
    pub finished: bool,
    pub interrupted: bool,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl ImportBody {
    fn new(record: ImportRecord, running: bool) -> Self {
        let state = record.state_seen(running);
        ImportBody {
            id: record.id,
            list_id: record.list_id,
            list_name: record.list_name,
            file_name: record.file_name,
            state,
            consent_attested: record.consent_source.is_some(),
            welcome: record.welcome,
            rows_read: record.rows_read,
            rows_staged: record.rows_staged,
            subscribers_added: record.subscribers_added,
            memberships_added: record.memberships_added,
            already_on_list: record.already_on_list,
            confirmations_queued: record.confirmations_queued,
            welcomes_queued: record.welcomes_queued,
            refused: record.refused,
            failure: record.failure.filter(|_| state == "failed"),
            finished: !matches!(state, "reading" | "merging"),
            interrupted: state == "interrupted",
            created_at: record.created_at,
            finished_at: record.finished_at,
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportParameters {
    /// The id of the list to import onto (not an archived one).
    #[param(value_type = Uuid)]
    list: Option<String>,
    /// Where the readers' consent came from, if it is attested: they are
    /// then imported confirmed. Absent: each is asked to confirm by email.
    consent_source: Option<String>,
    /// `true`: send the list's welcome email to the readers. `false` when
    /// absent.
    #[param(value_type = Option<bool>)]
    welcome: Option<String>,
    /// What to call the file on the pages. `upload.csv` when absent.
    file_name: Option<String>,
}

struct Options {
    list: Uuid,
    consent: Option<ConsentSource>,
    welcome: bool,
    file_name: String,
}

fn parse_options(raw: &str) -> Result<Options, Problem> {
    let parameters: ImportParameters = serde_urlencoded::from_str(raw)
        .map_err(|e| Problem::BadRequest(format!("The query string could not be read: {e}.")))?;
    let mut errors = Vec::new();
    let list = match parameters.list.as_deref().map(str::trim) {
        None | Some("") => {
            errors.push(FieldError::new("list", "`list` is required: a list's id."));
            None
        }
        Some(raw) => Uuid::try_parse(raw)
            .map_err(|_| errors.push(FieldError::new("list", "`list` is not a list's id.")))
            .ok(),
    };
    let consent = match parameters.consent_source.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => ConsentSource::parse(raw)
            .map_err(|reason| errors.push(FieldError::new("consent_source", reason)))
            .ok(),
    };
    let welcome = match parameters.welcome.as_deref().map(str::trim) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            errors.push(FieldError::new("welcome", "`welcome` is true or false."));
            false
        }
    };
    match (list, errors.is_empty()) {
        (Some(list), true) => Ok(Options {
            list,
            consent,
            welcome,
            file_name: file_name(parameters.file_name.as_deref().unwrap_or_default()),
        }),
        _ => Err(Problem::Invalid(errors)),
    }
}

fn too_large(max_bytes: u64) -> Problem {
    Problem::TooLarge(format!(
        "The file is larger than the {max_bytes} bytes an upload may be \
         (imports.max_upload_bytes). Split it into smaller files, or import it on the server \
         with `newsletter import`."
    ))
}

#[utoipa::path(post, path = "/api/v1/imports", tag = "api",
    security(("bearer" = [])),
    params(ImportParameters),
    request_body(content = String, content_type = "text/csv",
        description = "The CSV file, in UTF-8, its header row naming an `email` column."),
    responses(
        (status = 202, description = "Started, or this file is being imported onto this list already: the import.", body = ImportBody, content_type = "application/json",
         headers(("Location" = String, description = "The import's address in the API."))),
        (status = 200, description = "This file went onto this list before: that import. Nothing changed.", body = ImportBody, content_type = "application/json",
         headers(("Location" = String, description = "The import's address in the API."))),
        crate::api::openapi::UploadRefusals,
    ))]
pub async fn start_import(
    request: HttpRequest,
    token: ApiToken,
    payload: web::Payload,
    db: web::Data<Db>,
    uploads: web::Data<ImportUploads>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Publish)?;
    let options = parse_options(request.query_string())?;
    if !is_csv(&request) {
        return Err(Problem::UnsupportedMediaType(
            "Send the file as the body, with `Content-Type: text/csv`.".into(),
        ));
    }
    // A file far over the cap is refused before it is sent on.
    if content_length(&request).is_some_and(|length| length > uploads.max_bytes) {
        return Err(too_large(uploads.max_bytes));
    }
    // A list that is not there refuses the import: said before the file
    // is written rather than after (the import's start checks it again).
    let live = db
        .transaction(async |tx| lists::live_among(tx, &[options.list]).await)
        .await
        .step("find the list")?;
    if live.is_empty() {
        return Err(Problem::invalid(
            "list",
            format!("There is no live list with the id {}.", options.list),
        ));
    }
    let slot = uploads.slot()?;
    let (path, _) = match uploads.save(payload).await {
        Ok(saved) => saved,
        Err(SaveError::TooLarge) => return Err(too_large(uploads.max_bytes)),
        Err(SaveError::Body(e)) => {
            return Err(Problem::BadRequest(format!(
                "The body could not be read: {e}."
            )));
        }
        Err(SaveError::Io(e)) => {
            return Err(Problem::Unexpected(
                anyhow::Error::new(e).context("Failed to store the upload"),
            ));
        }
    };
    let import = ImportRequest {
        path: path.to_path_buf(),
        file_name: options.file_name,
        list: ListRef::Id(options.list),
        consent: options.consent,
        welcome: options.welcome,
        started_by: format!("token {}", token.token().name),
    };
    let actor = token.actor(&request);
    let (status, id) = match uploads.accept(&db, &actor, import, path, slot).await? {
        Ok(Accepted::Started(id)) => (StatusCode::ACCEPTED, id),
        Ok(Accepted::AlreadyImported(id)) => (StatusCode::OK, id),
        Ok(Accepted::Running(Some(id))) => (StatusCode::ACCEPTED, id),
        Ok(Accepted::Running(None)) => {
            return Err(Problem::Conflict(
                "This file is being imported onto this list right now, and its import has \
                 no id yet: try again in a moment."
                    .into(),
            ));
        }
        Err(refused) => return Err(refusal(refused)),
    };
    let body = read_import(&db, id).await?;
    Ok(HttpResponse::build(status)
        .insert_header((header::LOCATION, format!("/api/v1/imports/{id}")))
        .json(body))
}

/// An import refused at its start, as a problem naming what was refused.
fn refusal(refused: ImportError) -> Problem {
    match refused {
        ImportError::Other(e) => Problem::Unexpected(e),
        // The file is this server's own copy of the body: failing to read
        // it back is this side's fault, not the file's.
        ImportError::File(FileRefused::Io(e)) | ImportError::Unreadable(Unreadable::Io(e)) => {
            Problem::Unexpected(anyhow::Error::new(e).context("Failed to read back the upload"))
        }
        ImportError::NoSuchList(_) | ImportError::ArchivedList(_) => {
            Problem::invalid("list", refused.to_string())
        }
        ImportError::File(_) | ImportError::Unreadable(_) => {
            Problem::invalid("body", refused.to_string())
        }
    }
}

fn is_csv(request: &HttpRequest) -> bool {
    request
        .mime_type()
        .ok()
        .flatten()
        .is_some_and(|mime| mime.essence_str() == "text/csv")
}

fn content_length(request: &HttpRequest) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn read_import(db: &Db, id: Uuid) -> Result<ImportBody, Problem> {
    let read = db
        .transaction(async |tx| {
            let Some(record) = store::find(tx, id).await? else {
                return Ok(None);
            };
            let running = store::is_running(tx, id).await?;
            Ok(Some((record, running)))
        })
        .await
        .step("read the import")?;
    let (record, running) =
        read.ok_or_else(|| Problem::NotFound("No import has this id.".into()))?;
    Ok(ImportBody::new(record, running))
}

#[utoipa::path(get, path = "/api/v1/imports/{id}", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The import's id.")),
    responses(
        (status = 200, description = "The import, where it stands.", body = ImportBody, content_type = "application/json"),
        crate::api::openapi::ReadOneRefusals,
    ))]
pub async fn get_import(
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Read)?;
    let id =
        Uuid::try_parse(&id).map_err(|_| Problem::NotFound("No import has this id.".into()))?;
    Ok(HttpResponse::Ok().json(read_import(&db, id).await?))
}
