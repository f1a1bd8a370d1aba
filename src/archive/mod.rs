//! The public archive: issues an admin made public, as pages anyone may
//! read (`/archive`, `/archive/{slug}`) and as an Atom feed (`/feed.xml`).
//! [`Archive`] is the one way in, for the handlers and for the admin
//! actions that change what is public: it renders each answer once, keeps
//! it for a few seconds in [`cache::TtlCache`], and clears that cache once
//! a change made in this process commits, so that an issue made private
//! answers 404 on the next request here and within [`TTL`] on every other
//! replica. Reading the rendered answer from memory is what lets the issue
//! pages serve tens of thousands of requests a second without a database
//! round trip each.
//!
//! What is public and under which slug is the issues table's business,
//! in `campaigns::archive`; the web version's HTML, without anything for
//! one reader, is [`web_version`]'s.

pub mod cache;
mod pages;
mod web_version;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use askama::Template;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::campaigns::archive::{self as store, Entry, Publicity};
use crate::db::{self, Db, Transaction};
use crate::domain::{Newsletter, Slug};
use crate::newsletters::summary;
use cache::TtlCache;
use pages::{ArchivePage, EntryRow, Feed, FeedEntry, IssuePage, MissingPage};

pub use web_version::web_html;

/// How long a rendered answer is served from memory: how late another
/// replica may be to show a change.
pub const TTL: Duration = Duration::from_secs(5);

/// Answers kept at most: every public issue's page many times over; past
/// it, the cache starts again (see [`cache`]).
const CAPACITY: u64 = 10_000;

/// Issues on a page of the archive.
pub const PAGE_SIZE: i64 = 20;

/// Issues in the feed.
pub const FEED_SIZE: i64 = 20;

/// The characters of an issue's description (`og:description`, the feed's
/// summary).
const DESCRIPTION_CHARS: usize = 200;

/// `{base_url}/archive/{slug}`: an issue's web version.
pub fn issue_url(base_url: &str, slug: &str) -> String {
    format!("{}/archive/{slug}", base_url.trim_end_matches('/'))
}

/// One answer as rendered: what every request for it within the TTL gets.
#[derive(Debug)]
pub struct Rendered {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
    /// A strong validator: the body's hash, quoted. `None` for a 404.
    pub etag: Option<String>,
    pub last_modified: Option<DateTime<Utc>>,
}

/// How long before the read began a change must be for its time to be
/// given as Last-Modified. HTTP dates count whole seconds: a page read in
/// the second of a change, with that second as its Last-Modified, looks
/// the same to `If-Modified-Since` as the page after a second change in
/// that second, and a client holding the first would be told `304`. Past
/// this, every change of that second was in what was read (a second more
/// for a transaction that commits a little after its `now()`, and for the
/// database's clock against ours). Short of it, the answer has only its
/// ETag, which tells any two bodies apart.
const SETTLED: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

impl Rendered {
    /// `modified` is when what was read last changed, `read_at` when the
    /// reading began.
    fn ok(
        content_type: &'static str,
        body: String,
        modified: Option<DateTime<Utc>>,
        read_at: DateTime<Utc>,
    ) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        Self {
            status: StatusCode::OK,
            content_type,
            etag: Some(format!("\"{}\"", hex::encode(&digest[..16]))),
            body: Bytes::from(body),
            last_modified: modified.filter(|&modified| read_at - modified >= SETTLED),
        }
    }

    fn missing(body: String) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            content_type: HTML,
            body: Bytes::from(body),
            etag: None,
            last_modified: None,
        }
    }
}

const HTML: &str = "text/html; charset=utf-8";
pub const ATOM: &str = "application/atom+xml; charset=utf-8";

/// What the cache is keyed by: one entry per page of the list, per issue,
/// and the feed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    List(Option<Slug>),
    Issue(Slug),
    Feed,
}

/// A page of the list asked to start after an issue that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("`before` names no issue of the archive.")]
pub struct UnknownCursor;

#[derive(Clone)]
pub struct Archive {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

struct Inner {
    base_url: String,
    newsletter: Newsletter,
    /// `None` caches the answer that a list's cursor names no issue.
    cache: TtlCache<Key, Option<Arc<Rendered>>>,
}

impl Archive {
    pub fn new(base_url: &str, newsletter: Newsletter) -> Self {
        Self {
            inner: Arc::new(Inner {
                base_url: base_url.trim_end_matches('/').to_owned(),
                newsletter,
                cache: TtlCache::new(TTL, CAPACITY),
            }),
        }
    }

    /// The issue's web version, or the 404 page when no public issue has
    /// this slug.
    pub async fn issue(&self, db: &Db, slug: &Slug) -> Result<Arc<Rendered>, db::Error> {
        let key = Key::Issue(slug.clone());
        let rendered = self
            .inner
            .cache
            .get_or_load(key, async || {
                let read_at = Utc::now();
                let issue = db
                    .transaction(async |tx| store::public_issue(tx, slug).await)
                    .await?;
                Ok::<_, db::Error>(Some(Arc::new(match issue {
                    Some(issue) => self.render_issue(&issue, read_at),
                    None => self.missing(),
                })))
            })
            .await?;
        Ok(rendered.expect("an issue's answer is always some page"))
    }

    /// The 404 page of the archive, for an address that cannot name an
    /// issue at all.
    pub fn missing(&self) -> Rendered {
        Rendered::missing(render(&MissingPage {
            newsletter: &self.inner.newsletter,
        }))
    }

    /// A page of the list, newest first, starting after the issue of
    /// `before` if given.
    pub async fn list(
        &self,
        db: &Db,
        before: Option<&Slug>,
    ) -> Result<Result<Arc<Rendered>, UnknownCursor>, db::Error> {
        let key = Key::List(before.cloned());
        let rendered = self
            .inner
            .cache
            .get_or_load(key, async || {
                let read_at = Utc::now();
                let read = db
                    .transaction(async |tx| {
                        let position = match before {
                            None => None,
                            Some(slug) => match store::position_of(tx, slug).await? {
                                Some(position) => Some(position),
                                None => return Ok(None),
                            },
                        };
                        // One more than a page: whether it exists says
                        // whether an older page does.
                        let entries = store::entries(tx, position, PAGE_SIZE + 1).await?;
                        let changed = store::last_change(tx).await?;
                        Ok(Some((entries, changed)))
                    })
                    .await?;
                Ok::<_, db::Error>(read.map(|(entries, changed)| {
                    Arc::new(self.render_list(before.is_some(), entries, changed, read_at))
                }))
            })
            .await?;
        Ok(rendered.ok_or(UnknownCursor))
    }

    /// The Atom feed of the latest public issues.
    pub async fn feed(&self, db: &Db) -> Result<Arc<Rendered>, db::Error> {
        let rendered = self
            .inner
            .cache
            .get_or_load(Key::Feed, async || {
                let read_at = Utc::now();
                let (issues, changed) = db
                    .transaction(async |tx| {
                        let issues = store::latest(tx, FEED_SIZE).await?;
                        let changed = store::last_change(tx).await?;
                        Ok((issues, changed))
                    })
                    .await?;
                Ok::<_, db::Error>(Some(Arc::new(self.render_feed(issues, changed, read_at))))
            })
            .await?;
        Ok(rendered.expect("the feed is always some document"))
    }

    /// Puts the issue in the archive, in `tx`; this process forgets what
    /// it rendered once `tx` commits.
    pub async fn make_public(
        &self,
        tx: &mut Transaction<'_>,
        id: Uuid,
    ) -> Result<Publicity, sqlx::Error> {
        let publicity = store::make_public(tx, id).await?;
        self.forget_after_commit(tx, &publicity);
        Ok(publicity)
    }

    /// Takes the issue out of the archive, in `tx`; this process forgets
    /// what it rendered once `tx` commits, so its next request for the
    /// issue answers 404.
    pub async fn make_private(
        &self,
        tx: &mut Transaction<'_>,
        id: Uuid,
    ) -> Result<Publicity, sqlx::Error> {
        let publicity = store::make_private(tx, id).await?;
        self.forget_after_commit(tx, &publicity);
        Ok(publicity)
    }

    /// The issue's absolute address in the archive.
    pub fn url_of(&self, slug: &str) -> String {
        issue_url(&self.inner.base_url, slug)
    }

    fn forget_after_commit(&self, tx: &mut Transaction<'_>, publicity: &Publicity) {
        if let Publicity::Changed(_) = publicity {
            // The whole cache: the lists and the feed change with the issue.
            let inner = Arc::clone(&self.inner);
            tx.after_commit(move || inner.cache.clear());
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.base_url)
    }

    fn render_issue(&self, issue: &store::PublicIssue, read_at: DateTime<Utc>) -> Rendered {
        let entry = &issue.entry;
        let url = self.url_of(&entry.slug);
        let body = web_html(&issue.html_body, &self.inner.base_url);
        let page = IssuePage {
            newsletter: &self.inner.newsletter,
            title: &entry.title,
            description: &summary(&issue.content, DESCRIPTION_CHARS),
            url: &url,
            feed_url: &self.url("/feed.xml"),
            date_iso: entry.send_at.to_rfc3339(),
            date: human_date(entry.send_at),
            body: &body,
        };
        // The issue's words never change once published; what may is when
        // it (last) went public.
        let modified = entry.public_at.max(entry.send_at);
        Rendered::ok(HTML, render(&page), Some(modified), read_at)
    }

    fn render_list(
        &self,
        later_page: bool,
        mut entries: Vec<Entry>,
        changed: Option<DateTime<Utc>>,
        read_at: DateTime<Utc>,
    ) -> Rendered {
        let more = entries.len() as i64 > PAGE_SIZE;
        entries.truncate(PAGE_SIZE as usize);
        let older = more
            .then(|| entries.last())
            .flatten()
            .map(|e| e.slug.clone());
        let page = ArchivePage {
            newsletter: &self.inner.newsletter,
            url: &self.url("/archive"),
            feed_url: &self.url("/feed.xml"),
            entries: entries
                .into_iter()
                .map(|entry| EntryRow {
                    date_iso: entry.send_at.to_rfc3339(),
                    date: human_date(entry.send_at),
                    slug: entry.slug,
                    title: entry.title,
                })
                .collect(),
            later_page,
            older,
        };
        Rendered::ok(HTML, render(&page), changed, read_at)
    }

    fn render_feed(
        &self,
        issues: Vec<store::PublicIssue>,
        changed: Option<DateTime<Utc>>,
        read_at: DateTime<Utc>,
    ) -> Rendered {
        let entries = issues
            .into_iter()
            .map(|issue| FeedEntry {
                id: format!("urn:uuid:{}", issue.entry.id),
                url: self.url_of(&issue.entry.slug),
                published: rfc3339(issue.entry.send_at),
                summary: xml_chars(&summary(&issue.content, DESCRIPTION_CHARS)),
                html: xml_chars(&web_html(&issue.html_body, &self.inner.base_url)),
                title: xml_chars(&issue.entry.title),
            })
            .collect();
        let feed = Feed {
            newsletter: &self.inner.newsletter,
            self_url: &self.url("/feed.xml"),
            archive_url: &self.url("/archive"),
            // Atom requires one; before any issue was ever public, the
            // start of time says "nothing new".
            updated: rfc3339(changed.unwrap_or(DateTime::UNIX_EPOCH)),
            entries,
        };
        Rendered::ok(ATOM, render(&feed), changed, read_at)
    }
}

/// The text without the characters XML 1.0 forbids (the C0 controls but
/// tab, line feed and carriage return; U+FFFE and U+FFFF). HTML tolerates
/// them, and Markdown lets an author write them as entities (`&#1;`) that
/// the renderer and the sanitiser pass on; in the feed a single one makes
/// the whole document ill-formed, and a strict reader drops it. Escaping
/// cannot help: XML forbids them as character references too.
fn xml_chars(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            !matches!(c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}')
        })
        .collect()
}

/// `2027-01-10T09:00:00Z`: RFC 3339 as Atom wants it, to the second.
fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `10 January 2027`.
fn human_date(at: DateTime<Utc>) -> String {
    at.format("%-d %B %Y").to_string()
}

/// The templates take plain strings and render infallibly short of
/// running out of memory.
fn render(template: &impl Template) -> String {
    template
        .render()
        .expect("the archive's templates render infallibly")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_keeps_only_characters_xml_allows() {
        assert_eq!(
            xml_chars("a\u{0}\u{1}\u{8}\t\n\r\u{B}\u{C}\u{E}\u{1F} \u{FFFD}\u{FFFE}\u{FFFF}é😀z"),
            "a\t\n\r \u{FFFD}é😀z"
        );
    }

    #[test]
    fn a_change_is_given_as_last_modified_only_once_its_second_is_well_over() {
        let read_at = DateTime::parse_from_rfc3339("2027-01-10T09:00:10.100Z")
            .unwrap()
            .to_utc();
        for (modified, given) in [
            ("2027-01-10T09:00:10.000Z", false),
            ("2027-01-10T09:00:09.900Z", false),
            ("2027-01-10T09:00:08.200Z", false),
            ("2027-01-10T09:00:08.100Z", true),
            ("2027-01-10T08:00:00.000Z", true),
        ] {
            let at = DateTime::parse_from_rfc3339(modified).unwrap().to_utc();
            let rendered = Rendered::ok(HTML, "page".into(), Some(at), read_at);
            assert_eq!(rendered.last_modified.is_some(), given, "{modified}");
            assert!(rendered.etag.is_some(), "{modified}");
        }
    }
}
