//! The pages people see in a browser, rendered from `src/templates/` with
//! automatic HTML escaping, and how a handler tells a browser from an API
//! client. Every page carries the [`Newsletter`]: `base.html` puts its title
//! in the browser tab and the page header, escaped like everything else.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;

use uuid::Uuid;

use crate::domain::Newsletter;
use crate::subscribers::lists::List;

/// The subscribe form, empty or filled back in with what was typed and the
/// reason next to each field that was refused. It also says what the
/// newsletter is: its description.
#[derive(Template)]
#[template(path = "subscribe.html")]
pub struct SubscribePage<'a> {
    pub newsletter: &'a Newsletter,
    pub name: &'a str,
    pub email: &'a str,
    pub name_error: Option<String>,
    pub email_error: Option<String>,
    /// The lists to choose from; none when there is only one.
    pub lists: Vec<ListChoice>,
    pub lists_error: Option<String>,
}

impl<'a> SubscribePage<'a> {
    /// The form as a first visit shows it.
    pub fn empty(newsletter: &'a Newsletter, lists: Vec<List>) -> Self {
        Self {
            newsletter,
            name: "",
            email: "",
            name_error: None,
            email_error: None,
            lists: ListChoice::offered(lists, None),
            lists_error: None,
        }
    }
}

/// A list as a checkbox of the form.
#[derive(Debug, Clone)]
pub struct ListChoice {
    pub id: String,
    pub name: String,
    pub description: String,
    pub checked: bool,
}

impl ListChoice {
    /// The checkboxes for `lists`, with `chosen` ticked (the default list
    /// when nothing was chosen yet). A single list needs no choosing: no
    /// checkboxes, and the sign-up goes to the default list.
    pub fn offered(lists: Vec<List>, chosen: Option<&[Uuid]>) -> Vec<Self> {
        if lists.len() < 2 {
            return Vec::new();
        }
        lists
            .into_iter()
            .map(|list| Self {
                id: list.id.to_string(),
                checked: chosen.map_or(list.is_default, |chosen| chosen.contains(&list.id)),
                name: list.name,
                description: list.description,
            })
            .collect()
    }
}

#[derive(Template)]
#[template(path = "check_inbox.html")]
pub struct CheckInboxPage<'a> {
    pub newsletter: &'a Newsletter,
}

/// What became of a confirmation link.
#[derive(Template)]
#[template(path = "confirmation.html")]
pub struct ConfirmationPage<'a> {
    pub newsletter: &'a Newsletter,
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
    pub newsletter: &'a Newsletter,
    pub token: &'a str,
}

/// What an unsubscribe link opens: a button, since opening the link must
/// change nothing (mail systems' link scanners open every link). The
/// button sends what a mail client's one-click request sends.
#[derive(Template)]
#[template(path = "unsubscribe.html")]
pub struct UnsubscribePage<'a> {
    pub newsletter: &'a Newsletter,
    pub token: &'a str,
    /// The address the link is for, masked (`a•••@example.com`).
    pub address: Option<String>,
    /// The link came from a preview or a test send: it unsubscribes no one.
    pub test_send: bool,
    /// For an issue sent to lists: the lists the button leaves, and the
    /// query that says so to the button's `POST`.
    pub lists: Vec<String>,
    pub from_issue: String,
}

/// What became of an unsubscribe request.
#[derive(Template)]
#[template(path = "unsubscribed.html")]
pub struct UnsubscribedPage<'a> {
    pub newsletter: &'a Newsletter,
    pub heading: &'a str,
    pub message: &'a str,
    /// For someone who just left, the token of their link: the button that
    /// signs them up again (through the usual confirmation) sends it, and
    /// nothing else, so the page carries neither their address nor their
    /// name.
    pub resubscribe: Option<&'a str>,
    /// Whether to point the person to the form.
    pub offer_to_subscribe: bool,
    /// For someone who left some lists and is still on others: the token
    /// of their page of lists.
    pub preferences: Option<&'a str>,
}

/// A reader's own page of lists, opened from the link in an issue.
#[derive(Template)]
#[template(path = "preferences.html")]
pub struct PreferencesPage<'a> {
    pub newsletter: &'a Newsletter,
    /// The token of the link: the forms post back to it.
    pub token: &'a str,
    /// The address the page is for, masked.
    pub address: Option<String>,
    pub state: PreferencesState,
    /// What the last save did, if anything.
    pub notice: Option<&'a str>,
}

/// What the page of lists can offer.
pub enum PreferencesState {
    /// The link of a test email: it shows what a reader sees, and saves
    /// nothing.
    TestSend,
    /// The address is not confirmed yet: nothing to choose until it is.
    Unconfirmed,
    /// They left every list: they may sign up again, with a confirmation.
    Left,
    /// Their lists, with the form's token.
    Choosing {
        choices: Vec<ListChoice>,
        form_token: String,
    },
}

/// A refusal for going too fast, saying when to come back (see
/// `web::error::refusal_pages`).
#[derive(Template)]
#[template(path = "too_many_requests.html")]
pub struct TooManyRequestsPage<'a> {
    pub newsletter: &'a Newsletter,
    /// "Try again in 4 minutes."
    pub try_again: &'a str,
}

pub const STYLESHEET: &str = include_str!("templates/style.css");

/// What every answer may load and do, unless it says otherwise: nothing
/// but its own stylesheet, forms that submit only to this site, no
/// framing, no `<base>`. Sent on every answer (`startup`); a page that
/// needs more (a frame, images) sends this with its addition instead.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

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

    fn newsletter() -> Newsletter {
        Newsletter::parse("Rust Weekly", "Crabs, weekly.", "The Rust Desk").unwrap()
    }

    #[test]
    fn typed_values_are_escaped_when_the_form_is_shown_again() {
        let newsletter = newsletter();
        let page = SubscribePage {
            name: "Ada",
            email: "\"><script>alert(1)</script>",
            email_error: Some("'\"><script>' is not valid".into()),
            ..SubscribePage::empty(&newsletter, Vec::new())
        }
        .render()
        .unwrap();
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&#34;&#62;&#60;script&#62;"), "{page}");
    }

    #[test]
    fn each_error_is_tied_to_its_field() {
        let newsletter = newsletter();
        let page = SubscribePage {
            name_error: Some("The name must not be empty.".into()),
            ..SubscribePage::empty(&newsletter, Vec::new())
        }
        .render()
        .unwrap();
        assert!(page.contains(r#"aria-describedby="name-error""#));
        assert!(page.contains(r#"id="name-error">The name must not be empty."#));
        assert!(!page.contains("email-error"));
    }

    #[test]
    fn every_page_shows_the_newsletter_title_escaped_in_the_tab_and_the_header() {
        let newsletter = Newsletter::parse("<i>Rust</i> & Co", "", "Desk").unwrap();
        let escaped = "&#60;i&#62;Rust&#60;/i&#62; &#38; Co";
        let pages = [
            (
                "subscribe",
                SubscribePage::empty(&newsletter, Vec::new()).render(),
            ),
            (
                "check inbox",
                CheckInboxPage {
                    newsletter: &newsletter,
                }
                .render(),
            ),
            (
                "confirmation",
                ConfirmationPage {
                    newsletter: &newsletter,
                    heading: "Subscription confirmed",
                    message: "Thank you!",
                    offer_to_subscribe: false,
                }
                .render(),
            ),
            (
                "confirm button",
                ConfirmButtonPage {
                    newsletter: &newsletter,
                    token: "token",
                }
                .render(),
            ),
            (
                "unsubscribe",
                UnsubscribePage {
                    newsletter: &newsletter,
                    token: "token",
                    address: Some("a•••@example.com".into()),
                    test_send: false,
                    lists: Vec::new(),
                    from_issue: String::new(),
                }
                .render(),
            ),
            (
                "too many requests",
                TooManyRequestsPage {
                    newsletter: &newsletter,
                    try_again: "Try again in 4 minutes.",
                }
                .render(),
            ),
            (
                "unsubscribed",
                UnsubscribedPage {
                    newsletter: &newsletter,
                    heading: "You are unsubscribed",
                    message: "Bye.",
                    resubscribe: None,
                    offer_to_subscribe: false,
                    preferences: None,
                }
                .render(),
            ),
        ];
        for (which, page) in pages {
            let page = page.unwrap();
            assert!(!page.contains("<i>"), "{which}: {page}");
            assert!(
                page.contains(&format!(" · {escaped}</title>")),
                "{which}: {page}"
            );
            assert!(
                page.contains(&format!(
                    r#"<header class="masthead"><a href="/">{escaped}</a>"#
                )),
                "{which}: {page}"
            );
        }
    }

    #[test]
    fn the_unsubscribe_button_posts_the_one_click_form_to_its_own_link() {
        let page = UnsubscribePage {
            newsletter: &newsletter(),
            token: "abc123",
            address: None,
            test_send: false,
            lists: Vec::new(),
            from_issue: String::new(),
        }
        .render()
        .unwrap();
        assert!(
            page.contains(r#"<form method="post" action="/unsubscribe/abc123">"#),
            "{page}"
        );
        assert!(
            page.contains(r#"<input type="hidden" name="List-Unsubscribe" value="One-Click">"#),
            "{page}"
        );
        assert!(page.contains(r#"<meta name="robots" content="noindex">"#));
    }

    #[test]
    fn the_unsubscribe_page_names_the_address_it_is_for_escaped() {
        let page = UnsubscribePage {
            newsletter: &newsletter(),
            token: "abc123",
            address: Some("<•••@example.com".into()),
            test_send: false,
            lists: Vec::new(),
            from_issue: String::new(),
        }
        .render()
        .unwrap();
        assert!(
            page.contains(r#"<strong id="unsubscribe-address">&#60;•••@example.com</strong>"#),
            "{page}"
        );
        assert!(!page.contains("test email"), "{page}");
    }

    #[test]
    fn a_test_emails_unsubscribe_page_says_it_unsubscribes_no_one() {
        let page = UnsubscribePage {
            newsletter: &newsletter(),
            token: "abc123",
            address: None,
            test_send: true,
            lists: Vec::new(),
            from_issue: String::new(),
        }
        .render()
        .unwrap();
        assert!(
            page.contains("This link came from a test email: it unsubscribes no one."),
            "{page}"
        );
        assert!(!page.contains("unsubscribe-address"), "{page}");
    }

    #[test]
    fn the_resubscribe_button_posts_the_token_escaped_and_no_field() {
        let newsletter = newsletter();
        let page = UnsubscribedPage {
            newsletter: &newsletter,
            heading: "You are unsubscribed",
            message: "Bye.",
            resubscribe: Some("ab\"&cd"),
            offer_to_subscribe: false,
            preferences: None,
        }
        .render()
        .unwrap();
        assert!(
            page.contains(
                r#"<form method="post" action="/unsubscribe/ab&#34;&#38;cd/resubscribe">"#
            ),
            "{page}"
        );
        assert!(page.contains("Subscribe again</button>"), "{page}");
        assert!(!page.contains("<input"), "{page}");
    }

    #[test]
    fn the_subscribe_page_says_what_the_newsletter_is() {
        let page = SubscribePage::empty(&newsletter(), Vec::new())
            .render()
            .unwrap();
        assert!(
            page.contains(r#"<p class="description">Crabs, weekly.</p>"#),
            "{page}"
        );
    }
}
