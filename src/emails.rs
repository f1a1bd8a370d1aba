//! The emails the service sends, and the one shape an email has from here to
//! the wire: [`EmailContent`] (subject and both bodies) and [`Email`] (that
//! content for one recipient on one message stream). The contents are
//! rendered from `src/templates/emails/`. The HTML bodies are escaped
//! automatically (askama escapes `.html` templates), so nothing a person
//! typed, and nothing in the newsletter's title, reaches them as markup; the
//! text bodies (`.txt`, which askama leaves alone) are sent as they are.
//! Every email names the newsletter by its title, in the subject and in both
//! bodies. A newsletter email also carries its recipient's way out
//! ([`UnsubscribeLinks`]), which the email client turns into headers;
//! confirmations and notices, which people asked for, never do.

use askama::Template;

use crate::domain::{Newsletter, SubscriberEmail, SubscriberName, SubscriptionToken};
use crate::keys::UnsubscribeToken;

/// What an email says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailContent {
    pub subject: String,
    pub html_body: String,
    pub text_body: String,
}

/// An email for one recipient: what the outbox stores and the email client
/// sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub to: SubscriberEmail,
    pub content: EmailContent,
    /// Postmark keeps transactional and broadcast mail apart by stream.
    pub message_stream: String,
    /// The newsletter delivery it is, if it is one: sent along as metadata
    /// so that webhooks about it can be traced back.
    pub delivery: Option<crate::campaigns::DeliveryId>,
    /// The outbox message it is, once the outbox holds it: what tells a
    /// second attempt at it from another email with the same words (a
    /// test send made twice), so that a provider that keeps emails (the
    /// local inbox) keeps it once however often it is tried.
    pub outbox_id: Option<uuid::Uuid>,
    /// How the recipient leaves the list: newsletter emails only.
    pub unsubscribe: Option<UnsubscribeLinks>,
}

/// One recipient's way off the list, for the `List-Unsubscribe` headers
/// (RFC 2369) that mail clients show as an "Unsubscribe" button, with
/// one-click unsubscribing (RFC 8058): the provider `POST`s
/// `List-Unsubscribe=One-Click` to the link, and that alone unsubscribes.
/// The same link is the visible one in the email's bodies.
///
/// Every part is built here from parsed values (a base URL from the
/// configuration, a hex token, a parsed address, percent-encoded), so no
/// header value can hold a line break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeLinks {
    url: String,
    mailto: Option<String>,
    /// The reader's page of lists, signed by the same token.
    preferences: String,
}

impl UnsubscribeLinks {
    /// What `List-Unsubscribe-Post` says: the body a one-click request
    /// carries.
    pub const ONE_CLICK: &'static str = "List-Unsubscribe=One-Click";

    /// `{base_url}/unsubscribe/{token}`, and, when an address takes
    /// requests by email, `mailto:{mailbox}?subject=unsubscribe-{token}`.
    pub fn new(
        base_url: &str,
        token: &UnsubscribeToken,
        mailbox: Option<&SubscriberEmail>,
    ) -> Self {
        Self::from_issue(base_url, token, mailbox, None)
    }

    /// The links of an issue sent to lists: the one-click link leaves the
    /// lists of `issue` only (`?issue={id}`), and the page offers to leave
    /// everything.
    pub fn from_issue(
        base_url: &str,
        token: &UnsubscribeToken,
        mailbox: Option<&SubscriberEmail>,
        issue: Option<uuid::Uuid>,
    ) -> Self {
        let base_url = base_url.trim_end_matches('/');
        let from = issue.map_or_else(String::new, |issue| format!("?issue={issue}"));
        Self {
            url: format!("{base_url}/unsubscribe/{token}{from}"),
            preferences: format!("{base_url}/preferences/{token}"),
            mailto: mailbox.map(|mailbox| {
                format!(
                    "mailto:{}?subject=unsubscribe-{token}",
                    mailto_address(mailbox.as_ref())
                )
            }),
        }
    }

    /// The page that unsubscribes: what the bodies link to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The page where the reader chooses their lists: what the bodies
    /// link to beside the unsubscribe link.
    pub fn preferences_url(&self) -> &str {
        &self.preferences
    }

    /// The headers, by name, as they go out.
    pub fn headers(&self) -> [(&'static str, String); 2] {
        let mut list = format!("<{}>", self.url);
        if let Some(mailto) = &self.mailto {
            list.push_str(&format!(", <{mailto}>"));
        }
        [
            ("List-Unsubscribe", list),
            ("List-Unsubscribe-Post", Self::ONE_CLICK.to_owned()),
        ]
    }
}

/// An address as the `to` part of a `mailto:` URI (RFC 6068): characters
/// with a meaning in the URI, or in the header around it (`%`, `?`, `#`,
/// `&`, `=`, `,`, `<`, `>`), percent-encoded.
fn mailto_address(address: &str) -> String {
    let mut encoded = String::with_capacity(address.len());
    for byte in address.bytes() {
        if byte.is_ascii_alphanumeric() || b"@.-_~!$'*+".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

impl EmailContent {
    /// Bytes of text it carries: what it costs to store and to send.
    pub fn len(&self) -> usize {
        self.subject.len() + self.html_body.len() + self.text_body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Template)]
#[template(path = "emails/confirmation.html")]
struct ConfirmationHtml<'a> {
    title: &'a str,
    /// The newsletter's one paragraph, at the foot of the email.
    description: &'a str,
    name: &'a str,
    link: &'a str,
}

#[derive(Template)]
#[template(path = "emails/confirmation.txt")]
struct ConfirmationText<'a> {
    title: &'a str,
    /// The newsletter's one paragraph, at the foot of the email.
    description: &'a str,
    name: &'a str,
    link: &'a str,
}

#[derive(Template)]
#[template(path = "emails/already_subscribed.html")]
struct AlreadySubscribedHtml<'a> {
    title: &'a str,
    /// The newsletter's one paragraph, at the foot of the email.
    description: &'a str,
    name: &'a str,
    home: &'a str,
}

#[derive(Template)]
#[template(path = "emails/already_subscribed.txt")]
struct AlreadySubscribedText<'a> {
    title: &'a str,
    /// The newsletter's one paragraph, at the foot of the email.
    description: &'a str,
    name: &'a str,
    home: &'a str,
}

/// Asks a new subscriber to confirm. Both bodies carry the same link.
pub fn confirmation(
    newsletter: &Newsletter,
    base_url: &str,
    name: &SubscriberName,
    token: &SubscriptionToken,
) -> EmailContent {
    let link = confirmation_link(base_url, token);
    confirmation_with(newsletter, name.as_ref(), &link)
}

/// The confirmation email for many readers at once, queued as one content:
/// `{{name}}` and `{{token}}` are left for the outbox to fill per reader
/// ([`crate::outbox::personalise`]).
pub fn confirmation_for_many(newsletter: &Newsletter, base_url: &str) -> EmailContent {
    let link = format!(
        "{}/subscriptions/confirm?subscription_token={{{{token}}}}",
        base_url.trim_end_matches('/')
    );
    confirmation_with(newsletter, "{{name}}", &link)
}

fn confirmation_with(newsletter: &Newsletter, name: &str, link: &str) -> EmailContent {
    let title = newsletter.title();
    let description = newsletter.description();
    EmailContent {
        subject: format!("Please confirm your subscription to {title}"),
        html_body: render(&ConfirmationHtml {
            title,
            description,
            name,
            link,
        }),
        text_body: render(&ConfirmationText {
            title,
            description,
            name,
            link,
        }),
    }
}

/// Sent instead of a confirmation when the address is already on the list,
/// so that the form answers the same whether or not an address is subscribed.
pub fn already_subscribed(
    newsletter: &Newsletter,
    base_url: &str,
    name: &SubscriberName,
) -> EmailContent {
    let home = base_url.trim_end_matches('/');
    let (title, name) = (newsletter.title(), name.as_ref());
    let description = newsletter.description();
    EmailContent {
        subject: format!("You are already subscribed to {title}"),
        html_body: render(&AlreadySubscribedHtml {
            title,
            description,
            name,
            home,
        }),
        text_body: render(&AlreadySubscribedText {
            title,
            description,
            name,
            home,
        }),
    }
}

/// The templates are checked at compile time and their fields are plain
/// strings: rendering cannot fail short of running out of memory.
fn render(template: &impl Template) -> String {
    template
        .render()
        .expect("email templates render infallibly")
}

/// `{base_url}/subscriptions/confirm?subscription_token={token}`. The token is
/// alphanumeric, so it needs no percent-encoding.
pub fn confirmation_link(base_url: &str, token: &SubscriptionToken) -> String {
    format!(
        "{}/subscriptions/confirm?subscription_token={}",
        base_url.trim_end_matches('/'),
        token.as_ref()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> SubscriberName {
        SubscriberName::parse(raw).unwrap()
    }

    fn newsletter(title: &str) -> Newsletter {
        Newsletter::parse(title, "About things.", "The Desk").unwrap()
    }

    /// Both emails a sign-up can get, for `title`.
    fn both_emails(title: &str) -> [EmailContent; 2] {
        let newsletter = newsletter(title);
        let base = "https://news.example.com";
        [
            confirmation(
                &newsletter,
                base,
                &name("Ada"),
                &SubscriptionToken::generate(),
            ),
            already_subscribed(&newsletter, base, &name("Ada")),
        ]
    }

    fn token() -> UnsubscribeToken {
        let keys = crate::keys::Keys::derive(&secrecy::SecretString::from(
            "0123456789abcdef0123456789abcdef",
        ))
        .unwrap();
        keys.unsubscribe_token(uuid::Uuid::new_v4())
    }

    #[test]
    fn the_unsubscribe_headers_offer_the_link_and_one_click() {
        let token = token();
        let links = UnsubscribeLinks::new("https://news.example.com/", &token, None);
        let url = format!("https://news.example.com/unsubscribe/{token}");
        assert_eq!(links.url(), url);
        assert_eq!(
            links.headers(),
            [
                ("List-Unsubscribe", format!("<{url}>")),
                (
                    "List-Unsubscribe-Post",
                    "List-Unsubscribe=One-Click".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_mailbox_for_requests_is_offered_after_the_link() {
        let token = token();
        let mailbox = SubscriberEmail::parse("leave@news.example.com").unwrap();
        let links = UnsubscribeLinks::new("https://news.example.com", &token, Some(&mailbox));
        assert_eq!(
            links.headers()[0].1,
            format!(
                "<https://news.example.com/unsubscribe/{token}>, \
                 <mailto:leave@news.example.com?subject=unsubscribe-{token}>"
            )
        );
    }

    #[test]
    fn characters_with_a_meaning_in_a_mailto_uri_are_percent_encoded() {
        assert_eq!(
            mailto_address("a%b?c#d,e<f>@x.example.com"),
            "a%25b%3Fc%23d%2Ce%3Cf%3E@x.example.com"
        );
        assert_eq!(
            mailto_address("o'neil+news@x.example"),
            "o'neil+news@x.example"
        );
    }

    #[test]
    fn both_confirmation_bodies_contain_the_confirmation_link() {
        let token = SubscriptionToken::generate();
        let email = confirmation(
            &newsletter("Rust Weekly"),
            "https://news.example.com",
            &name("Ada"),
            &token,
        );
        let link = format!(
            "https://news.example.com/subscriptions/confirm?subscription_token={}",
            token.as_ref()
        );
        assert!(email.html_body.contains(&link), "{}", email.html_body);
        assert!(email.text_body.contains(&link), "{}", email.text_body);
    }

    #[test]
    fn a_trailing_slash_in_the_base_url_is_not_doubled() {
        let token = SubscriptionToken::generate();
        let link = confirmation_link("https://news.example.com/", &token);
        assert!(link.starts_with("https://news.example.com/subscriptions/confirm?"));
    }

    #[test]
    fn what_a_person_typed_is_escaped_in_html_bodies_only() {
        let token = SubscriptionToken::generate();
        let typed = name("Tom & Jerry's");
        for email in [
            confirmation(
                &newsletter("Rust Weekly"),
                "https://news.example.com",
                &typed,
                &token,
            ),
            already_subscribed(
                &newsletter("Rust Weekly"),
                "https://news.example.com",
                &typed,
            ),
        ] {
            assert!(
                email.html_body.contains("Tom &#38; Jerry&#39;s"),
                "{}",
                email.html_body
            );
            assert!(
                email.text_body.contains("Tom & Jerry's"),
                "{}",
                email.text_body
            );
        }
    }

    #[test]
    fn markup_in_the_base_url_is_escaped_in_html_bodies() {
        let token = SubscriptionToken::generate();
        let base = "https://x.example.com/\"><script>";
        for email in [
            confirmation(&newsletter("Rust Weekly"), base, &name("Ada"), &token),
            already_subscribed(&newsletter("Rust Weekly"), base, &name("Ada")),
        ] {
            assert!(!email.html_body.contains("<script>"), "{}", email.html_body);
        }
    }

    #[test]
    fn the_already_subscribed_notice_has_no_confirmation_link() {
        let email = already_subscribed(
            &newsletter("Rust Weekly"),
            "https://news.example.com",
            &name("Ada"),
        );
        assert!(!email.text_body.contains("subscription_token"));
        assert!(!email.html_body.contains("subscription_token"));
    }

    #[test]
    fn every_email_ends_with_the_newsletters_description() {
        for email in both_emails("Rust Weekly") {
            assert!(
                email.html_body.contains("About things."),
                "{}",
                email.html_body
            );
            assert!(
                email.text_body.contains("About things."),
                "{}",
                email.text_body
            );
        }
    }

    #[test]
    fn every_email_names_the_newsletter_in_its_subject_and_both_bodies() {
        for email in both_emails("Rust Weekly") {
            for (part, text) in [
                ("subject", &email.subject),
                ("html body", &email.html_body),
                ("text body", &email.text_body),
            ] {
                assert!(text.contains("Rust Weekly"), "{part}: {text}");
            }
        }
    }

    #[test]
    fn markup_in_the_title_is_escaped_in_html_bodies_only() {
        let title = "<script>alert(1)</script> & Co";
        for email in both_emails(title) {
            assert!(!email.html_body.contains("<script>"), "{}", email.html_body);
            assert!(
                email
                    .html_body
                    .contains("&#60;script&#62;alert(1)&#60;/script&#62; &#38; Co"),
                "{}",
                email.html_body
            );
            assert!(email.text_body.contains(title), "{}", email.text_body);
            assert!(email.subject.contains(title), "{}", email.subject);
        }
    }
}
