//! `/admin/inbox`: the emails the local inbox kept instead of sending them
//! (see [`crate::delivery::inbox`]), newest first, and each one as its
//! recipient would see it, links working: in a local run, a confirmation
//! is a click away.
//!
//! An email's HTML is shown in a frame of its own, from
//! `/admin/inbox/{id}/body`, rather than inside the page. The admin pages'
//! policy allows no inline style, which an email may use, so inside the
//! page it would not look as a mail client shows it; and whatever the
//! email holds must never run in the newsroom's origin. The body is sent
//! with a policy of its own: inline styles and images, no script, and
//! sandboxed (by the frame and by the policy alike, so opened on its own it
//! is just as powerless), into an origin of its own that sees no cookie and
//! no page of ours. Its links open in the whole window, as a mail client
//! opens them in a browser, which is what makes them work: the pages they
//! lead to refuse to be framed.
//!
//! Where the inbox is not among the providers, every route here answers
//! 404 with the reason, and the navigation does not link here.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType, HeaderValue};
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::admin::guard::SignedIn;
use crate::admin::pages::layout::nav;
use crate::db::Db;
use crate::delivery::inbox::{self, InboxEmail, LocalInbox, Summary};
use crate::pages::{CONTENT_SECURITY_POLICY, page};
use crate::routes::admin::pages::{InboxEmailPage, InboxMissingPage, InboxPage, InboxRow};
use crate::web::error::{ApiError, DatabaseStep};

/// Emails the list shows; it counts the older ones.
const SHOWN: i64 = 100;

/// What an email's body may do in its frame: show inline styles and
/// images, and open its links in the whole window when clicked. No script,
/// no form, no frame of its own; framed by the newsroom alone.
const BODY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; \
     img-src http: https: data:; form-action 'none'; frame-ancestors 'self'; \
     sandbox allow-top-navigation-by-user-activation allow-popups \
     allow-popups-to-escape-sandbox";

const NO_SUCH_EMAIL: &str = "No email in the inbox has this id: it may have been erased with \
                             its recipient, or removed by retention.";
const NOT_AN_ID: &str = "This address does not hold an email id: it may have been mistyped or \
                         cut short.";

#[utoipa::path(get, path = "/admin/inbox", tag = "admin",
    responses(
        (status = 200, description = "The emails the local inbox kept, newest first.", body = String, content_type = "text/html"),
        (status = 404, description = "The local inbox is off: emails go through a provider.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn inbox(
    admin: SignedIn,
    local: web::Data<LocalInbox>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ApiError> {
    if let Some(reason) = local.off_reason() {
        return Ok(missing(&admin, "No local inbox", reason));
    }
    let (emails, total) = read_list(&db).await?;
    let more = total - emails.len() as i64;
    Ok(page(
        StatusCode::OK,
        &InboxPage {
            newsletter: &admin.newsletter,
            nav: nav(&admin),
            rows: emails.into_iter().map(row).collect(),
            more: more.max(0),
        },
    ))
}

#[tracing::instrument(name = "Read the local inbox", skip(db))]
async fn read_list(db: &Db) -> Result<(Vec<Summary>, i64), ApiError> {
    db.transaction(async |tx| {
        let emails = inbox::newest(tx, SHOWN).await?;
        let total = inbox::count(tx).await?;
        Ok((emails, total))
    })
    .await
    .step("read the local inbox")
}

fn row(email: Summary) -> InboxRow {
    InboxRow {
        path: email_path(email.id),
        to: email.recipient,
        subject: email.subject,
        stream: email.message_stream,
        received_at: time(email.received_at),
    }
}

#[utoipa::path(get, path = "/admin/inbox/{id}", tag = "admin",
    params(("id" = String, Path, description = "The email's id in the inbox.")),
    responses(
        (status = 200, description = "The email: its headers, its HTML in a frame, its plain text.", body = String, content_type = "text/html"),
        (status = 404, description = "No such email, or the local inbox is off.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn inbox_email(
    admin: SignedIn,
    id: web::Path<String>,
    local: web::Data<LocalInbox>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ApiError> {
    let email = match find(&local, &id, &db).await? {
        Ok(email) => email,
        Err(Missing { heading, reason }) => return Ok(missing(&admin, heading, &reason)),
    };
    let path = email_path(email.id);
    let headers = email
        .headers()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let mut answer = page(
        StatusCode::OK,
        &InboxEmailPage {
            newsletter: &admin.newsletter,
            nav: nav(&admin),
            path,
            from: email.sender,
            to: email.recipient,
            subject: email.subject,
            stream: email.message_stream,
            received_at: time(email.received_at),
            headers,
            text_body: email.text_body,
        },
    );
    // The page's own policy, and its body's frame.
    let policy = format!("{CONTENT_SECURITY_POLICY}; frame-src 'self'");
    answer.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&policy).expect("the policy is a valid header"),
    );
    Ok(answer)
}

#[utoipa::path(get, path = "/admin/inbox/{id}/body", tag = "admin",
    params(("id" = String, Path, description = "The email's id in the inbox.")),
    responses(
        (status = 200, description = "The email's HTML as sent, for the frame on its page; sandboxed, links open in the whole window.", body = String, content_type = "text/html"),
        (status = 404, description = "No such email, or the local inbox is off.", body = String, content_type = "text/plain"),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn inbox_email_body(
    id: web::Path<String>,
    local: web::Data<LocalInbox>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ApiError> {
    let email = match find(&local, &id, &db).await? {
        Ok(email) => email,
        Err(Missing { reason, .. }) => return Err(ApiError::NotFound(reason)),
    };
    Ok(HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header((header::CONTENT_SECURITY_POLICY, BODY_POLICY))
        // The one answer the newsroom may frame; any other site still may
        // not.
        .insert_header((header::X_FRAME_OPTIONS, "SAMEORIGIN"))
        .body(links_open_in_the_whole_window(&email.html_body)))
}

/// Why an email cannot be shown.
struct Missing {
    heading: &'static str,
    reason: String,
}

/// The email `raw` names, or why there is none to show.
async fn find(
    local: &LocalInbox,
    raw: &str,
    db: &Db,
) -> Result<Result<InboxEmail, Missing>, ApiError> {
    let missing = |heading, reason: &str| {
        Ok(Err(Missing {
            heading,
            reason: reason.to_owned(),
        }))
    };
    if let Some(reason) = local.off_reason() {
        return missing("No local inbox", reason);
    }
    let Ok(id) = Uuid::try_parse(raw) else {
        return missing("No such email", NOT_AN_ID);
    };
    match read_one(db, id).await? {
        Some(email) => Ok(Ok(email)),
        None => missing("No such email", NO_SUCH_EMAIL),
    }
}

#[tracing::instrument(name = "Read an email of the local inbox", skip(db))]
async fn read_one(db: &Db, id: Uuid) -> Result<Option<InboxEmail>, ApiError> {
    db.transaction(async |tx| inbox::find(tx, id).await)
        .await
        .step("read an email of the local inbox")
}

/// 404, saying why.
fn missing(admin: &SignedIn, heading: &'static str, reason: &str) -> HttpResponse {
    page(
        StatusCode::NOT_FOUND,
        &InboxMissingPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            heading,
            reason,
        },
    )
}

fn email_path(id: Uuid) -> String {
    format!("/admin/inbox/{id}")
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The email's HTML with `<base target="_top">` first in its head: a link
/// clicked in the frame opens in the whole window. Left in the frame, the
/// page it opens would refuse to be framed and show nothing.
fn links_open_in_the_whole_window(html: &str) -> String {
    const BASE: &str = r#"<base target="_top">"#;
    let at = where_the_head_begins(html);
    format!("{}{BASE}{}", &html[..at], &html[at..])
}

/// Where the head's content begins: just after `<head>`; in a document
/// without one, after `<html>` or else the DOCTYPE, where the browser opens
/// the head it makes; in a fragment, at the start. Never before the
/// DOCTYPE, which would put the email in quirks mode. A tag inside a
/// comment is no tag, and the first element that is none of these ends the
/// search: the head, if any, came before it.
fn where_the_head_begins(html: &str) -> usize {
    // ASCII lower case keeps every byte where it was.
    let lower = html.to_ascii_lowercase();
    let mut after_the_opening = 0;
    let mut from = 0;
    while let Some(found) = lower[from..].find('<') {
        let at = from + found;
        let tag = &lower[at..];
        if let Some(comment) = tag.strip_prefix("<!--") {
            match comment.find("-->") {
                Some(end) => {
                    from = at + "<!--".len() + end + "-->".len();
                    continue;
                }
                None => break,
            }
        }
        let Some(end) = tag.find('>').map(|end| at + end + 1) else {
            break;
        };
        if is_tag(tag, "<head") {
            return end;
        }
        if tag.starts_with("<!doctype") || is_tag(tag, "<html") {
            after_the_opening = end;
        } else if tag[1..].starts_with(|c: char| c == '/' || c.is_ascii_alphabetic()) {
            break;
        }
        from = end;
    }
    after_the_opening
}

/// Whether `tag` opens the element `name` (`<head>`, `<head lang="en">`),
/// not one whose name only starts the same (`<header>`).
fn is_tag(tag: &str, name: &str) -> bool {
    tag.starts_with(name)
        && matches!(
            tag.as_bytes().get(name.len()),
            Some(b'>' | b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'/')
        )
}

#[cfg(test)]
mod tests {
    use super::links_open_in_the_whole_window as framed;

    #[test]
    fn links_open_in_the_whole_window_whatever_the_emails_shape() {
        let cases = [
            (
                "a document",
                "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n</head><body><a href=\"x\">x</a></body></html>",
                "<!DOCTYPE html>\n<html>\n<head><base target=\"_top\">\n<meta charset=\"utf-8\">",
            ),
            (
                "a head with attributes, in capitals",
                "<HTML><HEAD lang=\"en\"><TITLE>t</TITLE></HEAD></HTML>",
                "<HTML><HEAD lang=\"en\"><base target=\"_top\"><TITLE>",
            ),
            (
                "a fragment",
                "<p>Hello,</p><p><a href=\"x\">confirm</a></p>",
                "<base target=\"_top\"><p>Hello,</p>",
            ),
            (
                "a fragment with a header element",
                "<header>Hi</header><p>x</p>",
                "<base target=\"_top\"><header>Hi</header>",
            ),
            (
                "a DOCTYPE and no head",
                "<!DOCTYPE html>\n<p>Hi</p>",
                "<!DOCTYPE html><base target=\"_top\">\n<p>Hi</p>",
            ),
            (
                "a DOCTYPE and an html element, no head",
                "<!doctype html><html lang=\"en\"><body><p>Hi</p></body></html>",
                "<!doctype html><html lang=\"en\"><base target=\"_top\"><body>",
            ),
            (
                "a head in a comment before the real one",
                "<!DOCTYPE html><!-- <head> --><html><head><title>t</title></head></html>",
                "<!DOCTYPE html><!-- <head> --><html><head><base target=\"_top\"><title>",
            ),
            (
                "a head only in a comment",
                "<!DOCTYPE html><!-- no <head> here --><p>Hi</p>",
                "<!DOCTYPE html><base target=\"_top\"><!-- no <head> here -->",
            ),
            (
                "a comment before the DOCTYPE",
                "<!-- built by hand --><!DOCTYPE html><p>Hi</p>",
                "<!-- built by hand --><!DOCTYPE html><base target=\"_top\"><p>",
            ),
            (
                "a comment left open",
                "<!DOCTYPE html><!-- <head><p>Hi</p>",
                "<!DOCTYPE html><base target=\"_top\"><!-- <head>",
            ),
            (
                "a head after the body began",
                "<p>Hi</p><head></head>",
                "<base target=\"_top\"><p>Hi</p><head>",
            ),
        ];
        for (case, html, starts) in cases {
            let framed = framed(html);
            assert!(framed.starts_with(starts), "{case}: {framed}");
            assert_eq!(
                framed.replace(r#"<base target="_top">"#, ""),
                html,
                "{case}: the email itself changed"
            );
        }
    }
}
