//! The archive's templates: the list of public issues, an issue's web
//! version, the page for an address that names none, and the Atom feed
//! (RFC 4287). Every value is escaped by askama (the feed's `.xml`
//! template with the same escaper as the pages: `&`, `<`, `>`, `"` and `'`
//! as entities, which XML reads the same), except the issue's HTML, which
//! was sanitised when the issue was published.

use askama::Template;

use crate::domain::Newsletter;

/// One issue in the list.
pub struct EntryRow {
    pub slug: String,
    pub title: String,
    /// RFC 3339, for `<time datetime>`.
    pub date_iso: String,
    /// For people: `6 December 2026`.
    pub date: String,
}

#[derive(Template)]
#[template(path = "archive.html")]
pub struct ArchivePage<'a> {
    pub newsletter: &'a Newsletter,
    /// This page's absolute address, for `og:url`.
    pub url: &'a str,
    pub feed_url: &'a str,
    pub entries: Vec<EntryRow>,
    /// Whether this is a later page (`?before=`): then it links back to
    /// the first.
    pub later_page: bool,
    /// The slug the next (older) page starts after, if there is one.
    pub older: Option<String>,
}

#[derive(Template)]
#[template(path = "archive_issue.html")]
pub struct IssuePage<'a> {
    pub newsletter: &'a Newsletter,
    pub title: &'a str,
    /// A plain-text start of the issue, for `og:description`.
    pub description: &'a str,
    pub url: &'a str,
    pub feed_url: &'a str,
    pub date_iso: String,
    pub date: String,
    /// The web version's HTML: sanitised at publishing, inserted as it is.
    pub body: &'a str,
}

#[derive(Template)]
#[template(path = "archive_missing.html")]
pub struct MissingPage<'a> {
    pub newsletter: &'a Newsletter,
}

/// One entry of the feed.
pub struct FeedEntry {
    /// `urn:uuid:{issue id}`: stable whatever the service's address.
    pub id: String,
    pub title: String,
    pub url: String,
    /// RFC 3339.
    pub published: String,
    pub summary: String,
    /// The web version's HTML, which the template escapes into the
    /// `type="html"` content.
    pub html: String,
}

#[derive(Template)]
#[template(path = "feed.xml")]
pub struct Feed<'a> {
    pub newsletter: &'a Newsletter,
    pub self_url: &'a str,
    pub archive_url: &'a str,
    /// RFC 3339.
    pub updated: String,
    pub entries: Vec<FeedEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_escapes_titles_and_content_as_xml() {
        let newsletter = Newsletter::parse("R&D <Weekly>", "About \"things\"", "Desk").unwrap();
        let feed = Feed {
            newsletter: &newsletter,
            self_url: "https://x.test/feed.xml",
            archive_url: "https://x.test/archive",
            updated: "2027-01-10T09:00:00Z".into(),
            entries: vec![FeedEntry {
                id: "urn:uuid:0".into(),
                title: "Tom & Jerry's <b>".into(),
                url: "https://x.test/archive/tom-jerry".into(),
                published: "2027-01-10T09:00:00Z".into(),
                summary: "a < b".into(),
                html: "<p>Hi &amp; bye</p>".into(),
            }],
        }
        .render()
        .unwrap();
        assert!(
            feed.contains("<title>R&#38;D &#60;Weekly&#62;</title>"),
            "{feed}"
        );
        assert!(
            feed.contains("<title>Tom &#38; Jerry&#39;s &#60;b&#62;</title>"),
            "{feed}"
        );
        assert!(
            feed.contains(
                "<content type=\"html\">&#60;p&#62;Hi &#38;amp; bye&#60;/p&#62;</content>"
            ),
            "{feed}"
        );
        assert!(
            feed.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>"),
            "{feed}"
        );
    }
}
