//! `/unsubscribe/{token}`: leaving the list, from the link in every
//! newsletter email and from the `List-Unsubscribe` header mail clients turn
//! into a button.
//!
//! `GET` only shows a page with one button: link scanners open every link
//! in an email, and opening one must not unsubscribe anyone. `POST` is
//! RFC 8058's one-click request: mail providers send it on the reader's
//! behalf, with `List-Unsubscribe=One-Click` as its form body (or, from
//! some, no body at all), and no cookie, login or confirmation step can
//! stand in its way. So it unsubscribes at once and answers 200, whatever
//! the body, as often as it is sent.
//!
//! The token names the subscriber and carries an HMAC of their id
//! ([`Keys::unsubscribe_token`]); a token this service did not sign is
//! refused with 400 before the database is asked anything. The page shows
//! the address the link is for, masked (`a•••@example.com`): enough for its
//! owner to see that it is theirs, not enough for whoever a link was
//! forwarded to. Unsubscribing also deletes the subscriber's confirmation
//! tokens: a confirmation link from an older sign-up must never bring them
//! back without a fresh sign-up of their own.
//!
//! The page after unsubscribing offers a "Subscribe again" button. It
//! posts the token, not the address: a page that anyone holding a forwarded
//! link can open, as often as they like, must not carry the address or the
//! name in its source. `POST /unsubscribe/{token}/resubscribe` looks the
//! subscriber up and signs them up again the way the form does
//! ([`crate::routes::public::sign_up`]): the same limits, a confirmation email to
//! the stored address, and the same answer.
//!
//! Previews and test sends of an issue carry a token of their own
//! ([`Keys::test_unsubscribe_token`]): it opens a page that says it came
//! from a test email, and its `POST`s answer 200 and change nothing.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName};
use actix_web::middleware::DefaultHeaders;
use actix_web::{HttpRequest, HttpResponse, dev::HttpServiceFactory, web};

use uuid::Uuid;

use crate::campaigns::ledger;
use crate::db::Db;
use crate::domain::{NewSubscriber, Newsletter, SubscriberEmail, SubscriberName};
use crate::keys::{BadToken, Keys, Unsubscriber};
use crate::pages::{UnsubscribePage, UnsubscribedPage, page, wants_html};
use crate::routes::public::sign_up::SignUpDesk;
use crate::subscribers::leaving::{self, Left};
use crate::subscribers::lists;
use crate::subscribers::{self, Contact};
use crate::web::error::{ApiError, DatabaseStep};

/// A one-click request's body is `List-Unsubscribe=One-Click`, 26 bytes;
/// larger ones are tolerated up to this, and refused with 413 beyond it.
pub const BODY_LIMIT_BYTES: usize = 1024;

/// The resource at `path`. Its answers are never cached (they follow a
/// per-person link and say what happened to that person) nor indexed.
///
/// No per-IP rate limit, unlike the other public forms: mail providers send
/// one-click requests for many readers from a few addresses, in bulk, and a
/// limit would refuse people's unsubscribes. A forged token costs one HMAC
/// and no database work, which is what a limit would have protected.
pub fn resource(path: &str) -> impl HttpServiceFactory + 'static {
    web::resource(path)
        .app_data(web::PayloadConfig::new(BODY_LIMIT_BYTES))
        .wrap(personal())
        .get(show)
        .post(one_click)
}

/// The resource at `path` for the "Subscribe again" button. Not cached nor
/// indexed either; limited per IP and per address by the sign-up it runs.
pub fn resubscribe_resource(path: &str) -> impl HttpServiceFactory + 'static {
    web::resource(path).wrap(personal()).post(resubscribe)
}

/// The headers of an answer that follows a per-person link.
pub(crate) fn personal() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CACHE_CONTROL, "no-store"))
        .add((HeaderName::from_static("x-robots-tag"), "noindex"))
}

/// `GET`: the page with the button, for a token this service signed, with
/// the address it is for.
#[utoipa::path(get, path = "/unsubscribe/{token}", tag = "public",
    params(("token" = String, Path, description = "The signed token from the unsubscribe link.")),
    responses(
        (status = 200, description = "The page with the Unsubscribe button and the address it is for, masked; or, for a subscriber erased since, that the address is not on the list; or, for a test email's link, that it unsubscribes no one. Nothing changes.", body = String, content_type = "text/html"),
        (status = 400, description = "A token this service did not sign.", content((String = "text/html"), (String = "text/plain"))),
        (status = 404, description = "No such route: a path parameter left empty.", body = String, content_type = "text/plain"),
        crate::web::openapi_responses::Unavailable,
    ))]
#[tracing::instrument(name = "Open an unsubscribe link", skip_all)]
pub async fn show(
    request: HttpRequest,
    token: web::Path<String>,
    keys: web::Data<Keys>,
    db: web::Data<Db>,
    newsletter: web::Data<Newsletter>,
) -> Result<HttpResponse, ApiError> {
    let token = token.into_inner();
    let subscriber_id = match keys.verify_unsubscribe_token(&token) {
        Ok(Unsubscriber::Subscriber(id)) => id,
        Ok(Unsubscriber::TestSend) => {
            return Ok(button_page(&newsletter, &token, None, true, None));
        }
        Err(bad) => return refuse(bad, wants_html(&request), &newsletter),
    };
    let issue = from_issue(&request);
    let found = db
        .transaction(async |transaction| {
            let Some(address) = subscribers::address_of(transaction, subscriber_id).await? else {
                return Ok(None);
            };
            let lists = match issue {
                Some(issue) => match ledger::lists_of(transaction, issue).await? {
                    Some(ids) => Some((issue, lists::names(transaction, &ids).await?)),
                    None => None,
                },
                None => None,
            };
            Ok(Some((address, lists)))
        })
        .await
        .step("read the address to unsubscribe")?;
    let Some((address, from)) = found else {
        // A page, whatever `Accept` says: this answer is one, as the
        // button page is.
        return Ok(not_on_the_list(true, &newsletter));
    };
    Ok(button_page(
        &newsletter,
        &token,
        masked(&address),
        false,
        from,
    ))
}

/// A stored address as the pages show it (`u•••@example.com`). Stored
/// addresses were parsed on the way in; one that a later, stricter parser
/// refuses is left out rather than shown in full.
pub(crate) fn masked(address: &str) -> Option<String> {
    SubscriberEmail::parse(address).ok().map(|a| a.masked())
}

/// The page with the Unsubscribe button: for a subscriber, with their
/// address masked; for a test email's link, saying that it unsubscribes
/// no one.
fn button_page(
    newsletter: &Newsletter,
    token: &str,
    address: Option<String>,
    test_send: bool,
    from: Option<(Uuid, Vec<String>)>,
) -> HttpResponse {
    let (from_issue, lists) = match from {
        Some((issue, lists)) => (format!("?issue={issue}"), lists),
        None => (String::new(), Vec::new()),
    };
    page(
        StatusCode::OK,
        &UnsubscribePage {
            newsletter,
            token,
            address,
            test_send,
            lists,
            from_issue,
        },
    )
}

/// The issue a link came from (`?issue={id}`), when it went to lists: its
/// link leaves those lists only. Read by hand, never refused: a one-click
/// request must unsubscribe whatever else its address carries, so a query
/// that cannot be read leaves everything, as a link without one does.
fn from_issue(request: &HttpRequest) -> Option<Uuid> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(request.query_string()).ok()?;
    pairs
        .iter()
        .find(|(key, _)| key == "issue")
        .and_then(|(_, value)| Uuid::try_parse(value).ok())
}

/// `POST`: unsubscribes the token's subscriber. The body is read (up to
/// [`BODY_LIMIT_BYTES`]) and not looked at: with or without the one-click
/// form, in any content type, the request means the same.
#[utoipa::path(post, path = "/unsubscribe/{token}", tag = "public",
    params(("token" = String, Path, description = "The signed token from the unsubscribe link.")),
    request_body(content = String, description = "RFC 8058's `List-Unsubscribe=One-Click`, or anything else: the body is not looked at.", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Unsubscribed, or not on the list; or, for a test email's link, nothing changed.", content((String = "text/html"), (String = "text/plain"))),
        (status = 400, description = "A token this service did not sign, or a body that could not be read.", content((String = "text/html"), (String = "text/plain"))),
        (status = 404, description = "No such route: a path parameter left empty.", body = String, content_type = "text/plain"),
        (status = 413, description = "A body over 1 KiB.", body = String, content_type = "text/plain"),
        crate::web::openapi_responses::Unavailable,
    ))]
#[tracing::instrument(name = "Unsubscribe", skip_all, fields(subscriber_id = tracing::field::Empty))]
pub async fn one_click(
    request: HttpRequest,
    token: web::Path<String>,
    _body: web::Bytes,
    keys: web::Data<Keys>,
    db: web::Data<Db>,
    newsletter: web::Data<Newsletter>,
) -> Result<HttpResponse, ApiError> {
    let html = wants_html(&request);
    let subscriber_id = match keys.verify_unsubscribe_token(&token) {
        Ok(Unsubscriber::Subscriber(id)) => id,
        Ok(Unsubscriber::TestSend) => return Ok(test_send(html, &newsletter)),
        Err(bad) => return refuse(bad, html, &newsletter),
    };
    tracing::Span::current().record("subscriber_id", tracing::field::display(subscriber_id));
    let issue = from_issue(&request);
    let left = db
        .transaction(async |transaction| {
            // An issue sent to lists: its link leaves those lists, unless
            // they were the reader's last.
            let lists = match issue {
                Some(issue) => ledger::lists_of(transaction, issue).await?,
                None => None,
            };
            leaving::leave(transaction, &keys, subscriber_id, lists.as_deref()).await
        })
        .await
        .step("unsubscribe")?;
    Ok(match left {
        Left::Everything { address } => unsubscribed(html, &newsletter, &token, &address),
        Left::Lists { address } => left_lists(html, &newsletter, &token, &address),
        Left::Nobody => not_on_the_list(html, &newsletter),
    })
}

/// Done: for a browser, a page naming the address masked, with a button
/// that signs them up again by the token alone.
fn unsubscribed(html: bool, newsletter: &Newsletter, token: &str, address: &str) -> HttpResponse {
    const MESSAGE: &str = "You are unsubscribed. You will not receive another issue.";
    if !html {
        return plain(MESSAGE);
    }
    let message = match masked(address) {
        Some(address) => format!("{address} will not receive another issue."),
        None => "You will not receive another issue.".to_owned(),
    };
    page(
        StatusCode::OK,
        &UnsubscribedPage {
            newsletter,
            heading: "You are unsubscribed",
            // The heading already says it.
            message: &message,
            resubscribe: Some(token),
            offer_to_subscribe: false,
            preferences: None,
        },
    )
}

/// Done, for the lists of one issue: a page naming the address masked, with
/// the way to the reader's page of lists.
fn left_lists(html: bool, newsletter: &Newsletter, token: &str, address: &str) -> HttpResponse {
    const MESSAGE: &str = "You left the lists this issue came from. Your other lists go on.";
    if !html {
        return plain(MESSAGE);
    }
    let message = match masked(address) {
        Some(address) => format!(
            "{address} left the lists this issue came from. Your other lists go on: choose \
             them on your page of lists."
        ),
        None => MESSAGE.to_owned(),
    };
    page(
        StatusCode::OK,
        &UnsubscribedPage {
            newsletter,
            heading: "You left these lists",
            message: &message,
            resubscribe: None,
            offer_to_subscribe: false,
            preferences: Some(token),
        },
    )
}

/// `POST`: the "Subscribe again" button on the page after unsubscribing.
/// Signs the token's subscriber up again, under the stored name and
/// address, exactly as the sign-up form would: the confirmation email goes
/// to the stored address, and nothing changes until its link is used. The
/// body (the button sends an empty form) is not read.
#[utoipa::path(post, path = "/unsubscribe/{token}/resubscribe", tag = "public",
    params(("token" = String, Path, description = "The signed token from the unsubscribe link.")),
    responses(
        (status = 200, description = "Accepted as `POST /subscriptions` accepts a sign-up (a confirmation email to the stored address, or a notice if still subscribed; nothing past the per-address limit): the check-your-inbox page for browsers, an empty text for other clients. Or, for a subscriber erased since, that the address is not on the list; or, for a test email's link, that nothing changed.", content((String = "text/html"), (String = "text/plain"))),
        (status = 400, description = "A token this service did not sign, or a stored name or address that can no longer be signed up.", content((String = "text/html"), (String = "text/plain"))),
        (status = 404, description = "No such route: a path parameter left empty.", body = String, content_type = "text/plain"),
        crate::web::openapi_responses::TooManyRequests,
        crate::web::openapi_responses::Unavailable,
    ))]
#[tracing::instrument(name = "Subscribe again", skip_all, fields(subscriber_id = tracing::field::Empty))]
pub async fn resubscribe(
    token: web::Path<String>,
    keys: web::Data<Keys>,
    db: web::Data<Db>,
    desk: SignUpDesk,
) -> Result<HttpResponse, ApiError> {
    let html = desk.wants_html();
    let newsletter = desk.newsletter();
    let subscriber_id = match keys.verify_unsubscribe_token(&token) {
        Ok(Unsubscriber::Subscriber(id)) => id,
        Ok(Unsubscriber::TestSend) => return Ok(test_send(html, newsletter)),
        Err(bad) => return refuse(bad, html, newsletter),
    };
    // Looked up before the limits are checked, which need the address: a
    // lookup by key, for a token this service signed.
    let contact = db
        .transaction(async |transaction| subscribers::contact_of(transaction, subscriber_id).await)
        .await
        .step("read who subscribes again")?;
    let Some(contact) = contact else {
        return Ok(not_on_the_list(html, newsletter));
    };
    match signs_up_again(contact) {
        Ok(new_subscriber) => desk.sign_up(new_subscriber).await,
        Err(reason) => refused(html, newsletter, "Subscribe with the form", reason, true),
    }
}

/// The stored name and address as a sign-up. Both were parsed on the way
/// in; one that a later, stricter parser refuses is refused here as the
/// form would refuse it, with its reason.
fn signs_up_again(contact: Contact) -> Result<NewSubscriber, String> {
    Ok(NewSubscriber {
        name: SubscriberName::parse(&contact.name)?,
        email: SubscriberEmail::parse(&contact.email)?,
        // Back to the default list, as the form would without a choice.
        lists: Vec::new(),
    })
}

/// A valid link whose subscriber is gone: nothing to do, and nothing wrong.
pub(crate) fn not_on_the_list(html: bool, newsletter: &Newsletter) -> HttpResponse {
    let message = "This address is not on the list: you will not receive any issue.";
    notice(html, newsletter, "Not on the list", message, true)
}

/// The link of a test email, pressed: it names no one, so nothing changes.
fn test_send(html: bool, newsletter: &Newsletter) -> HttpResponse {
    let message = "This link came from a test email: no one was unsubscribed.";
    notice(html, newsletter, "Nothing changed", message, false)
}

/// 200 with `message`: for browsers a page under `heading`, pointing to
/// the sign-up form if `offer_to_subscribe`.
fn notice(
    html: bool,
    newsletter: &Newsletter,
    heading: &str,
    message: &'static str,
    offer_to_subscribe: bool,
) -> HttpResponse {
    if !html {
        return plain(message);
    }
    page(
        StatusCode::OK,
        &UnsubscribedPage {
            newsletter,
            heading,
            message,
            resubscribe: None,
            offer_to_subscribe,
            preferences: None,
        },
    )
}

/// A token this service did not sign: 400 with the reason, as a page for
/// browsers.
pub(crate) fn refuse(
    bad: BadToken,
    html: bool,
    newsletter: &Newsletter,
) -> Result<HttpResponse, ApiError> {
    refused(html, newsletter, "Link not valid", bad.to_string(), false)
}

/// 400 with the reason: for browsers a page under `heading`, pointing to
/// the sign-up form if `offer_to_subscribe`.
fn refused(
    html: bool,
    newsletter: &Newsletter,
    heading: &str,
    reason: String,
    offer_to_subscribe: bool,
) -> Result<HttpResponse, ApiError> {
    if !html {
        return Err(ApiError::BadRequest(reason));
    }
    Ok(page(
        StatusCode::BAD_REQUEST,
        &UnsubscribedPage {
            newsletter,
            heading,
            message: &reason,
            resubscribe: None,
            offer_to_subscribe,
            preferences: None,
        },
    ))
}

fn plain(message: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(message)
}
