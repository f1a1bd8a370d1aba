//! An issue's web version: the email's HTML as stored, with nothing in it
//! for one reader. The issue template marks the greeting and the footer
//! (unsubscribe and preferences links) between `<!--personal-->` and
//! `<!--/personal-->`; those parts go. Placeholders left outside them (an
//! issue stored before the marks existed) are filled with values that name
//! no one: "reader", and the home page for the links. The "Read on the
//! web" placeholder is filled with nothing: the reader is on the web.

use crate::emails::EmailContent;
use crate::newsletters::{PREFERENCES_URL, RECIPIENT_NAME, UNSUBSCRIBE_URL, WebVersion};
use crate::outbox::{Personalisation, personalise_with};

const PERSONAL_START: &str = "<!--personal-->";
const PERSONAL_END: &str = "<!--/personal-->";

/// What the web version greets with where an older issue says
/// `Hello {{name}}`.
const NEUTRAL_NAME: &str = "reader";

/// The inside of the stored document's `<body>`, without its personal
/// parts, its placeholders filled with values that name no one.
pub fn web_html(stored: &str, base_url: &str) -> String {
    let body = inner_body(stored);
    let shared = without_personal_parts(body);
    let home = format!("{}/", base_url.trim_end_matches('/'));
    let values = Personalisation::from([
        (RECIPIENT_NAME.to_owned(), NEUTRAL_NAME.to_owned()),
        (UNSUBSCRIBE_URL.to_owned(), home.clone()),
        (PREFERENCES_URL.to_owned(), home),
    ]);
    let content = EmailContent {
        subject: String::new(),
        html_body: shared,
        text_body: String::new(),
    };
    personalise_with(&content, &values, WebVersion::link(None).markup()).html_body
}

/// Between `<body>` and `</body>`, or the whole of it without them.
fn inner_body(html: &str) -> &str {
    let start = html.find("<body>").map_or(0, |at| at + "<body>".len());
    let end = html[start..]
        .rfind("</body>")
        .map_or(html.len(), |at| start + at);
    &html[start..end]
}

/// `html` without what lies between each pair of marks. A start without
/// its end drops the rest: better a page cut short than a reader's link
/// shown.
fn without_personal_parts(html: &str) -> String {
    let mut shared = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find(PERSONAL_START) {
        shared.push_str(&rest[..start]);
        let after = &rest[start + PERSONAL_START.len()..];
        rest = after
            .find(PERSONAL_END)
            .map_or("", |end| &after[end + PERSONAL_END.len()..]);
    }
    shared.push_str(rest);
    shared
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Newsletter;
    use crate::newsletters::{Draft, render};

    #[test]
    fn the_web_version_keeps_the_issue_and_drops_greeting_and_footer() {
        let newsletter = Newsletter::parse("Rust Weekly", "Crabs.", "Desk").unwrap();
        let draft = Draft::parse("Issue 1", "Some *news* about {{name}}.").unwrap();
        let html = web_html(&render(&newsletter, &draft).html_body, "https://x.test");
        assert!(html.contains("<h1>Issue 1</h1>"), "{html}");
        assert!(html.contains("<em>news</em>"), "{html}");
        // The author's braces stay as they were typed.
        assert!(html.contains("&#123;&#123;name}}"), "{html}");
        for personal in [
            "Hello",
            "Unsubscribe",
            "unsubscribe_url",
            "preferences",
            "<body",
            "web_version",
        ] {
            assert!(!html.contains(personal), "{personal} in {html}");
        }
    }

    #[test]
    fn an_older_issue_without_marks_is_filled_with_values_that_name_no_one() {
        let stored =
            "<html><body><p>Hello {{name}},</p><a href=\"{{unsubscribe_url}}\">x</a></body></html>";
        let html = web_html(stored, "https://x.test/");
        assert_eq!(
            html,
            "<p>Hello reader,</p><a href=\"https://x.test/\">x</a>"
        );
    }

    #[test]
    fn an_unclosed_personal_part_drops_the_rest() {
        assert_eq!(without_personal_parts("a<!--personal-->b"), "a");
        assert_eq!(
            without_personal_parts(
                "a<!--personal-->b<!--/personal-->c<!--personal-->d<!--/personal-->"
            ),
            "ac"
        );
    }
}
