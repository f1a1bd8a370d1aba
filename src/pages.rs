//! The pages people see in a browser, rendered from `src/templates/` with
//! automatic HTML escaping, and how a handler tells a browser from an API
//! client.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;

/// The subscribe form, empty or filled back in with what was typed and the
/// reason next to each field that was refused.
#[derive(Template, Default)]
#[template(path = "subscribe.html")]
pub struct SubscribePage<'a> {
    pub name: &'a str,
    pub email: &'a str,
    pub name_error: Option<String>,
    pub email_error: Option<String>,
}

#[derive(Template)]
#[template(path = "check_inbox.html")]
pub struct CheckInboxPage;

/// What became of a confirmation link.
#[derive(Template)]
#[template(path = "confirmation.html")]
pub struct ConfirmationPage<'a> {
    pub heading: &'a str,
    pub message: &'a str,
    /// Whether to point the person back to the form.
    pub offer_to_subscribe: bool,
}

/// Asks for a click before confirming, for mail systems whose link scanners
/// open every link in an email.
#[derive(Template)]
#[template(path = "confirm_button.html")]
pub struct ConfirmButtonPage<'a> {
    pub token: &'a str,
}

pub const STYLESHEET: &str = include_str!("templates/style.css");

/// Whether the client asked for a page (browsers put `text/html` in
/// `Accept`; API clients such as curl send `*/*` or nothing).
pub fn wants_html(request: &HttpRequest) -> bool {
    request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// A rendered page with its status.
pub fn page(status: StatusCode, template: &impl Template) -> HttpResponse {
    match template.render() {
        Ok(body) => HttpResponse::build(status)
            .content_type(ContentType::html())
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "Failed to render a page");
            HttpResponse::InternalServerError().finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_are_escaped_when_the_form_is_shown_again() {
        let page = SubscribePage {
            name: "Ada",
            email: "\"><script>alert(1)</script>",
            email_error: Some("'\"><script>' is not valid".into()),
            ..Default::default()
        }
        .render()
        .unwrap();
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&#34;&#62;&#60;script&#62;"), "{page}");
    }

    #[test]
    fn each_error_is_tied_to_its_field() {
        let page = SubscribePage {
            name_error: Some("The name must not be empty.".into()),
            ..Default::default()
        }
        .render()
        .unwrap();
        assert!(page.contains(r#"aria-describedby="name-error""#));
        assert!(page.contains(r#"id="name-error">The name must not be empty."#));
        assert!(!page.contains("email-error"));
    }
}
