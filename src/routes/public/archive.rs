//! `GET /archive`, `GET /archive/{slug}` and `GET /feed.xml`: the public
//! archive, its issues' web versions and its Atom feed, as
//! [`crate::archive::Archive`] renders and keeps them. Each answer carries
//! a validator pair (`ETag`, `Last-Modified`) and may be kept by a CDN for a
//! short while; a request that already holds the answer gets `304` and no
//! body.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::archive::{Archive, Rendered};
use crate::db::Db;
use crate::domain::Slug;
use crate::web::error::{ApiError, DatabaseStep};

/// Short, for a CDN: a change shows within a minute and a half there (the
/// cache here adds its own few seconds), and a stale copy may be served
/// while a fresh one is fetched.
const CACHE_CONTROL: &str = "public, max-age=60, stale-while-revalidate=30";

/// The issue pages show the issue's own images, which load from the web
/// as they do in the email; nothing else is added to the service's policy.
const ISSUE_POLICY: &str = "default-src 'none'; style-src 'self'; img-src http: https:; \
                            form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParameters {
    /// The slug of the issue the page starts after (the "Older issues"
    /// link).
    before: Option<String>,
}

#[utoipa::path(get, path = "/archive", tag = "public",
    params(ListParameters),
    responses(
        (status = 200, description = "A page of the public issues, newest first.", body = String, content_type = "text/html"),
        (status = 304, description = "Not modified since the validators sent (If-None-Match, If-Modified-Since)."),
        (status = 400, description = "`before` is not a slug, or names no issue in the archive (an embargoed or private issue answers as an unknown one).", body = String, content_type = "text/plain"),
        crate::web::openapi_responses::Unavailable,
    ))]
pub async fn archive(
    request: HttpRequest,
    parameters: web::Query<ListParameters>,
    archive: web::Data<Archive>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ApiError> {
    let before = parameters
        .before
        .as_deref()
        .map(Slug::parse)
        .transpose()
        .map_err(|reason| ApiError::BadRequest(format!("`before`: {reason}")))?;
    let rendered = archive
        .list(&db, before.as_ref())
        .await
        .step("read the archive")?
        .map_err(|unknown| ApiError::BadRequest(unknown.to_string()))?;
    Ok(answer(&request, &rendered, None))
}

#[utoipa::path(get, path = "/archive/{slug}", tag = "public",
    params(("slug" = String, Path, description = "The issue's address in the archive.")),
    responses(
        (status = 200, description = "The issue's web version.", body = String, content_type = "text/html"),
        (status = 304, description = "Not modified since the validators sent (If-None-Match, If-Modified-Since)."),
        (status = 404, description = "No public issue has this address: the archive's page (or, for an address that is no issue's at all, such as an empty one, the service's plain 404).", content((String = "text/html"), (String = "text/plain"))),
        crate::web::openapi_responses::Unavailable,
    ))]
pub async fn issue(
    request: HttpRequest,
    slug: web::Path<String>,
    archive: web::Data<Archive>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ApiError> {
    // An address that cannot be a slug names no issue: the same 404,
    // without asking the database.
    let Ok(slug) = Slug::parse(&slug) else {
        return Ok(answer(&request, &archive.missing(), Some(ISSUE_POLICY)));
    };
    let rendered = archive.issue(&db, &slug).await.step("read the issue")?;
    Ok(answer(&request, &rendered, Some(ISSUE_POLICY)))
}

#[utoipa::path(get, path = "/feed.xml", tag = "public",
    responses(
        (status = 200, description = "The latest public issues as an Atom feed (RFC 4287).", body = String, content_type = "application/atom+xml"),
        (status = 304, description = "Not modified since the validators sent (If-None-Match, If-Modified-Since)."),
        crate::web::openapi_responses::Unavailable,
    ))]
pub async fn feed(
    request: HttpRequest,
    archive: web::Data<Archive>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ApiError> {
    let rendered = archive.feed(&db).await.step("read the feed")?;
    Ok(answer(&request, &rendered, None))
}

/// The rendered answer, or `304` when the request's validators match it.
fn answer(
    request: &HttpRequest,
    rendered: &Rendered,
    policy: Option<&'static str>,
) -> HttpResponse {
    let unchanged = not_modified(request, rendered);
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::build(rendered.status)
    };
    response.insert_header((header::CACHE_CONTROL, CACHE_CONTROL));
    if let Some(policy) = policy {
        response.insert_header((header::CONTENT_SECURITY_POLICY, policy));
    }
    if let Some(etag) = &rendered.etag {
        response.insert_header((header::ETAG, etag.as_str()));
    }
    if let Some(modified) = rendered.last_modified {
        response.insert_header((header::LAST_MODIFIED, http_date(modified)));
    }
    if unchanged {
        return response.finish();
    }
    response
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(rendered.content_type),
        ))
        .body(rendered.body.clone())
}

/// RFC 9110 §13.2.2: `If-None-Match` decides when present (weak
/// comparison); otherwise `If-Modified-Since`, to the second. Only a 200
/// has validators.
fn not_modified(request: &HttpRequest, rendered: &Rendered) -> bool {
    if !rendered.status.is_success() {
        return false;
    }
    let headers = request.headers();
    if let Some(if_none_match) = headers.get(header::IF_NONE_MATCH) {
        let Some(etag) = &rendered.etag else {
            return false;
        };
        let Ok(tags) = if_none_match.to_str() else {
            return false;
        };
        let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
        return tags
            .split(',')
            .any(|tag| tag.trim() == "*" || opaque(tag) == opaque(etag));
    }
    let (Some(modified), Some(since)) = (
        rendered.last_modified,
        headers.get(header::IF_MODIFIED_SINCE),
    ) else {
        return false;
    };
    let since = since
        .to_str()
        .ok()
        .and_then(|since| DateTime::parse_from_rfc2822(since).ok());
    since.is_some_and(|since| modified.timestamp() <= since.timestamp())
}

/// `Sun, 06 Dec 2026 17:40:00 GMT` (the IMF-fixdate of RFC 9110).
fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use actix_web::web::Bytes;
    use chrono::TimeZone;

    fn rendered() -> Rendered {
        Rendered {
            status: actix_web::http::StatusCode::OK,
            content_type: "text/html",
            body: Bytes::from_static(b"page"),
            etag: Some("\"abc\"".into()),
            last_modified: Some(Utc.with_ymd_and_hms(2027, 1, 10, 9, 0, 0).unwrap()),
        }
    }

    #[test]
    fn validators_decide_whether_the_answer_is_304() {
        for (headers, expected) in [
            (vec![], false),
            (vec![("If-None-Match", "\"abc\"")], true),
            (vec![("If-None-Match", "W/\"abc\"")], true),
            (vec![("If-None-Match", "\"x\", \"abc\"")], true),
            (vec![("If-None-Match", "*")], true),
            (vec![("If-None-Match", "\"other\"")], false),
            // If-None-Match decides when both are sent.
            (
                vec![
                    ("If-None-Match", "\"other\""),
                    ("If-Modified-Since", "Sun, 10 Jan 2027 09:00:00 GMT"),
                ],
                false,
            ),
            (
                vec![("If-Modified-Since", "Sun, 10 Jan 2027 09:00:00 GMT")],
                true,
            ),
            (
                vec![("If-Modified-Since", "Sun, 10 Jan 2027 08:59:59 GMT")],
                false,
            ),
            (vec![("If-Modified-Since", "not a date")], false),
        ] {
            let mut request = TestRequest::default();
            for (name, value) in &headers {
                request = request.insert_header((*name, *value));
            }
            let request = request.to_http_request();
            assert_eq!(not_modified(&request, &rendered()), expected, "{headers:?}");
        }
    }

    #[test]
    fn dates_are_written_as_http_wants_them() {
        let at = Utc.with_ymd_and_hms(2027, 1, 10, 9, 5, 3).unwrap();
        assert_eq!(http_date(at), "Sun, 10 Jan 2027 09:05:03 GMT");
    }
}
