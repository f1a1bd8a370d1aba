//! `GET /admin/imports`: the latest imports, newest first, each with where
//! it stands and its counts, and the form that uploads a file
//! ([`super::upload`]).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use super::ImportUploads;
use super::pages::{ImportRow, ImportsPage, ListOption, UploadFields};
use super::view::{ImportView, import_path};
use crate::admin::guard::SignedIn;
use crate::admin::pages::layout::nav;
use crate::db::Db;
use crate::imports::store;
use crate::pages::page;
use crate::subscribers::lists;
use crate::web::error::{ApiError, DatabaseStep};

/// Imports the page lists: a list is imported a few times in its life, so
/// this is every import of most installations.
const LIST_LIMIT: i64 = 200;

#[utoipa::path(get, path = "/admin/imports", tag = "admin",
    responses((status = 200, description = "The imports, and the form to upload a file.", body = String, content_type = "text/html"), crate::web::openapi_responses::AdminOnly))]
pub async fn imports(
    admin: SignedIn,
    db: web::Data<Db>,
    uploads: web::Data<ImportUploads>,
) -> Result<HttpResponse, ApiError> {
    render(
        &db,
        &admin,
        &uploads,
        StatusCode::OK,
        UploadFields::default(),
    )
    .await
}

/// The page with `status`, the upload form filled in with `fields`.
pub(super) async fn render(
    db: &Db,
    admin: &SignedIn,
    uploads: &ImportUploads,
    status: StatusCode,
    fields: UploadFields,
) -> Result<HttpResponse, ApiError> {
    let (imports, lists) = db
        .transaction(async |tx| {
            let mut imports = Vec::new();
            for record in store::latest(tx, LIST_LIMIT).await? {
                // Only an unfinished import needs the look at its lock.
                let running = matches!(record.state.as_str(), "reading" | "merging")
                    && store::is_running(tx, record.id).await?;
                imports.push((record, running));
            }
            let lists = lists::all(tx).await?;
            Ok((imports, lists))
        })
        .await
        .step("read the imports")?;
    let rows = imports
        .into_iter()
        .map(|(record, running)| ImportRow {
            path: import_path(record.id),
            state: ImportView::new(&record, running).state,
            file_name: record.file_name,
            list_name: record.list_name,
            rows_read: record.rows_read,
            added: record.memberships_added,
            already_on_list: record.already_on_list,
            refused: record.refused,
            started_by: record.started_by,
            created_at: record.created_at.format("%Y-%m-%d %H:%M").to_string(),
        })
        .collect();
    // An archived list takes no new readers: it is not offered.
    let lists = lists
        .into_iter()
        .filter(|list| list.archived_at.is_none())
        .map(|list| ListOption {
            selected: if fields.list.is_empty() {
                list.is_default
            } else {
                fields.list == list.id.to_string()
            },
            id: list.id.to_string(),
            name: list.name,
        })
        .collect();
    Ok(page(
        status,
        &ImportsPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            rows,
            lists,
            fields,
            max_upload: size_text(uploads.max_bytes),
        },
    ))
}

/// A size as a person reads it: "512 MiB", "1.5 GiB", "800 KiB".
pub(super) fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    if size.fract() == 0.0 {
        format!("{size:.0} {}", UNITS[unit])
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_said_in_the_largest_unit_they_fill() {
        for (bytes, said) in [
            (512 * 1024 * 1024, "512 MiB"),
            (3 * 1024 * 1024 / 2 * 1024, "1.5 GiB"),
            (800 * 1024, "800 KiB"),
            (100, "100 bytes"),
        ] {
            assert_eq!(size_text(bytes), said, "{bytes}");
        }
    }
}
