//! `POST /admin/imports`: an upload of a CSV file onto a list, as
//! `multipart/form-data`. The file is written to a temporary file as it
//! arrives, a chunk at a time (never held whole: a million readers are
//! tens of megabytes), up to `imports.max_upload_bytes`, past which the
//! upload stops and is answered 413. Then the import starts
//! ([`crate::imports::Importer::start`]): the file and the list are checked
//! at once, and a refusal (an empty file, one not in UTF-8, a header row
//! that names no address, a list that is gone or archived) is answered 422
//! on the form with the reason. Accepted, the import runs in the
//! background and the admin is sent to its page (303), which follows it
//! live; the temporary file is removed when the import ends. The same file
//! onto the same list again goes to the earlier import's page, which says
//! nothing changed.
//!
//! The form's CSRF token must come before the file (the form puts it
//! first): a forged upload is refused before a byte of its file is
//! written. The audit log records who started which import, of which file
//! onto which list, and whether they attested the readers' consent; never
//! a row of the file.

use actix_multipart::{Field, Multipart, MultipartError};
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use futures::TryStreamExt;
use tempfile::TempPath;

use super::ImportUploads;
use super::list::{render, size_text};
use super::pages::UploadFields;
use super::view::import_path;
use crate::admin::actor::actor_for;
use crate::admin::guard::{SignedIn, check_csrf};
use crate::db::Db;
use crate::domain::ConsentSource;
use crate::imports::upload::{Accepted, SaveError, file_name};
use crate::imports::{FileRefused, ImportError, ImportRequest, ListRef, Unreadable};
use crate::rate_limit::RateLimiter;
use crate::routes::FORM_BODY_LIMIT_BYTES;
use crate::subscribers::lists;
use crate::web::answers::see_other;
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};

/// The longest text field the form has (the consent source, 500
/// characters of up to 4 bytes), with room to spare.
const MAX_FIELD_BYTES: usize = 4 * 1024;
/// The most text fields an upload form may have: it has four (`csrf_token`,
/// `list`, `consent_source`, `welcome`), and each is held in memory.
const MAX_TEXT_FIELDS: usize = 16;

/// What the form adds around the file: its other fields and the parts'
/// headers. A body longer than the cap by more than this holds a file
/// over the cap.
const FORM_OVERHEAD_BYTES: u64 = 64 * 1024;

/// The form, as documented: the service reads it part by part.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The id of the list to import onto (not an archived one).
    list: String,
    /// Where the readers' consent came from, if the admin attests it:
    /// they are then imported confirmed. Empty: each is asked to confirm.
    consent_source: Option<String>,
    /// Present (`on`): send the list's welcome email to its readers.
    welcome: Option<String>,
    /// The CSV file, in UTF-8. After `csrf_token`.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

#[utoipa::path(post, path = "/admin/imports", tag = "admin",
    request_body(content = inline(UploadForm), content_type = "multipart/form-data"),
    responses(
        (status = 303, description = "Started: to the import's page; or, for a file imported onto the list before, to that import's page.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 422, description = "The file or the list refused, with the reason on the page.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn upload(
    request: HttpRequest,
    admin: SignedIn,
    payload: web::Payload,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
    uploads: web::Data<ImportUploads>,
) -> Result<HttpResponse, ApiError> {
    // A browser says how long the body is: a file far over the cap is
    // refused before it is sent on.
    if content_length(&request)
        .is_some_and(|length| length > uploads.max_bytes.saturating_add(FORM_OVERHEAD_BYTES))
    {
        return Ok(too_large(uploads.max_bytes));
    }
    if !is_multipart(&request) {
        return Err(other_form(payload, &admin).await);
    }
    let slot = uploads.slot()?;
    let payload = Multipart::new(request.headers(), payload);
    let upload = match receive(payload, &admin, &uploads).await {
        Ok(upload) => upload,
        Err(Refused::TooLarge) => return Ok(too_large(uploads.max_bytes)),
        Err(Refused::Answer(e)) => return Err(e),
    };
    let Upload { file, fields } = upload;
    let refuse = |reason: String| UploadFields {
        list: fields.list.clone(),
        consent_source: fields.consent_source.clone(),
        welcome: fields.welcome,
        error: Some(reason),
    };
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let Some((path, file_name)) = file else {
        let shown = refuse("Choose a file to import.".into());
        return render(&db, &admin, &uploads, unprocessable, shown).await;
    };
    let consent = match fields.consent_source.trim() {
        "" => None,
        source => match ConsentSource::parse(source) {
            Ok(source) => Some(source),
            Err(reason) => {
                return render(&db, &admin, &uploads, unprocessable, refuse(reason)).await;
            }
        },
    };
    let Some((list_id, _)) = find_list(&db, &fields.list).await? else {
        let shown = refuse("There is no such list: choose one of the form's.".into());
        return render(&db, &admin, &uploads, unprocessable, shown).await;
    };
    let import = ImportRequest {
        path: path.to_path_buf(),
        file_name,
        list: ListRef::Id(list_id),
        consent,
        welcome: fields.welcome,
        started_by: admin.admin.username.clone(),
    };
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    match uploads.accept(&db, &actor, import, path, slot).await? {
        Ok(Accepted::Started(id)) => Ok(see_other(import_path(id))),
        // This file went onto this list before: its page says so.
        Ok(Accepted::AlreadyImported(id)) => {
            Ok(see_other(format!("{}?notice=already", import_path(id))))
        }
        // A second click, or another tab: the import already running is
        // the one to watch, rather than a request held open until it ends.
        Ok(Accepted::Running(running)) => Ok(see_other(
            running.map_or_else(|| "/admin/imports".to_owned(), import_path),
        )),
        Err(ImportError::Other(e)) => Err(ApiError::Unexpected(e)),
        // The file is this server's own copy of the upload: failing to read
        // it back is this side's fault, not the file's.
        Err(ImportError::File(FileRefused::Io(e)) | ImportError::Unreadable(Unreadable::Io(e))) => {
            Err(ApiError::Unexpected(
                anyhow::Error::new(e).context("Failed to read back the uploaded file"),
            ))
        }
        Err(refused) => {
            let shown = refuse(refused.to_string());
            render(&db, &admin, &uploads, unprocessable, shown).await
        }
    }
}

/// The list `id` names, if any, with its name for the audit log. An
/// archived list is the importer's to refuse, with its reason.
async fn find_list(db: &Db, id: &str) -> Result<Option<(uuid::Uuid, String)>, ApiError> {
    let Ok(id) = uuid::Uuid::try_parse(id.trim()) else {
        return Ok(None);
    };
    let list = db
        .transaction(async |tx| lists::find(tx, id).await)
        .await
        .step("find the list")?;
    Ok(list.map(|list| (list.id, list.name)))
}

fn is_multipart(request: &HttpRequest) -> bool {
    request
        .mime_type()
        .ok()
        .flatten()
        .is_some_and(|mime| mime.type_() == "multipart")
}

/// The answer to a body that is not `multipart/form-data`. Its token is
/// checked first all the same, as on every admin form: 403 without the
/// session's, and only then 415.
async fn other_form(payload: web::Payload, admin: &SignedIn) -> ApiError {
    let fields: Vec<(String, String)> = match payload.to_bytes_limited(FORM_BODY_LIMIT_BYTES).await
    {
        Ok(Ok(body)) => serde_urlencoded::from_bytes(&body).unwrap_or_default(),
        _ => Vec::new(),
    };
    match check_csrf(&admin.session.data, &fields) {
        Err(refused) => refused,
        Ok(()) => ApiError::UnsupportedMediaType("Send the form as multipart/form-data.".into()),
    }
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

fn too_large(max_bytes: u64) -> HttpResponse {
    HttpResponse::PayloadTooLarge()
        .content_type("text/plain; charset=utf-8")
        .body(format!(
            "The file is larger than the {} an upload may be (imports.max_upload_bytes). \
             Split it into smaller files, or import it on the server with `newsletter import`.",
            size_text(max_bytes)
        ))
}

/// The form, received: the file on disk with the name it was sent with
/// (`None` when no file was chosen), and the other fields.
struct Upload {
    file: Option<(TempPath, String)>,
    fields: Fields,
}

#[derive(Default)]
struct Fields {
    list: String,
    consent_source: String,
    welcome: bool,
}

enum Refused {
    /// The file is over the cap.
    TooLarge,
    Answer(ApiError),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Self::Answer(e)
    }
}

impl From<MultipartError> for Refused {
    fn from(e: MultipartError) -> Self {
        Self::Answer(match e {
            MultipartError::ContentTypeMissing
            | MultipartError::ContentTypeParse
            | MultipartError::ContentTypeIncompatible => {
                ApiError::UnsupportedMediaType("Send the form as multipart/form-data.".into())
            }
            other => ApiError::BadRequest(format!("The upload could not be read: {other}.")),
        })
    }
}

/// Reads the form part by part: the fields into memory (each small), the
/// file to disk, once the CSRF token before it has been checked.
async fn receive(
    mut payload: Multipart,
    admin: &SignedIn,
    uploads: &ImportUploads,
) -> Result<Upload, Refused> {
    let mut text: Vec<(String, String)> = Vec::new();
    let mut file = None;
    while let Some(mut field) = payload.try_next().await? {
        let name = field.name().unwrap_or_default().to_owned();
        if name != "file" {
            // Each field is short, and so is their number: the form has
            // four.
            if text.len() >= MAX_TEXT_FIELDS {
                return Err(ApiError::BadRequest("The form has too many fields.".into()).into());
            }
            let value = read_text(&mut field, &name).await?;
            text.push((name, value));
            continue;
        }
        check_csrf(&admin.session.data, &text)?;
        if file.is_some() {
            return Err(ApiError::BadRequest("One file at a time.".into()).into());
        }
        let sent_as = field
            .content_disposition()
            .and_then(|disposition| disposition.get_filename())
            .unwrap_or_default()
            .to_owned();
        let (path, bytes) = write_to_disk(&mut field, uploads).await?;
        // A form sent without a file chosen has an empty part with no name.
        if !(sent_as.is_empty() && bytes == 0) {
            file = Some((path, file_name(&sent_as)));
        }
    }
    check_csrf(&admin.session.data, &text)?;
    let value = |name: &str| {
        text.iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.clone())
    };
    Ok(Upload {
        file,
        fields: Fields {
            list: value("list").unwrap_or_default(),
            consent_source: value("consent_source").unwrap_or_default(),
            welcome: value("welcome").is_some(),
        },
    })
}

async fn read_text(field: &mut Field, name: &str) -> Result<String, Refused> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.try_next().await? {
        if bytes.len() + chunk.len() > MAX_FIELD_BYTES {
            return Err(ApiError::BadRequest(format!("The field \"{name}\" is too long.")).into());
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| {
        ApiError::BadRequest(format!("The field \"{name}\" is not UTF-8 text.")).into()
    })
}

/// Writes the file part to a new temporary file as it arrives
/// ([`ImportUploads::save`]), and says how long it was.
async fn write_to_disk(
    field: &mut Field,
    uploads: &ImportUploads,
) -> Result<(TempPath, u64), Refused> {
    match uploads.save(field).await {
        Ok(saved) => Ok(saved),
        Err(SaveError::TooLarge) => Err(Refused::TooLarge),
        Err(SaveError::Body(e)) => Err(e.into()),
        Err(SaveError::Io(e)) => Err(ApiError::Unexpected(
            anyhow::Error::new(e).context("Failed to store the upload"),
        )
        .into()),
    }
}
