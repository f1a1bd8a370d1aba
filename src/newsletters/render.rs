//! A newsletter issue as an email. The Markdown an admin wrote becomes an HTML
//! fragment (rendered by `pulldown-cmark`, then sanitised by `ammonia`, since
//! Markdown lets raw HTML through) and a plain-text rendering (written here
//! from the same Markdown events), each set inside the `issue` templates.
//!
//! The email is rendered once per issue. What differs per recipient is left
//! as placeholders, `{{name}}` ([`RECIPIENT_NAME`]), `{{unsubscribe_url}}`
//! ([`UNSUBSCRIBE_URL`]) and `{{preferences_url}}` ([`PREFERENCES_URL`]), which the outbox fills when it
//! sends each email: raw in the subject and text body, HTML-escaped in the
//! HTML body. The outbox fills any `{{key}}` it has a value for, wherever it
//! came from, so no `{{` the author (or the newsletter's settings) typed may
//! reach the email as it is: in the HTML fragment every `{` becomes the
//! entity `&#123;`, which reads the same; in plain text and in the short
//! values of the templates, every `{{` is written as the outbox's
//! [`LITERAL_BRACES`], which it turns back into `{{` without filling
//! anything (`literal_braces`).

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::LazyLock;

use askama::Template;
use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use super::Draft;
use crate::domain::Newsletter;
use crate::emails::EmailContent;
use crate::outbox::{LITERAL_BRACES, Markup};

/// The placeholder the outbox fills with the recipient's name.
pub const RECIPIENT_NAME: &str = "name";
/// The placeholder the outbox fills with the recipient's own unsubscribe link.
pub const UNSUBSCRIBE_URL: &str = "unsubscribe_url";
/// The placeholder the outbox fills with the link to the recipient's own
/// page of lists.
pub const PREFERENCES_URL: &str = "preferences_url";
/// The placeholder filled, when each email is sent, with a "Read on the
/// web" link while the issue is in the public archive, and with nothing
/// while it is not. Filled at send time rather than at rendering, so that
/// an issue made public (or private) while it is sending changes the
/// batches still to go.
pub const WEB_VERSION: &str = "web_version";

/// What fills [`WEB_VERSION`]: the link to the issue's web version, or
/// nothing.
#[derive(Debug, Clone, Default)]
pub struct WebVersion {
    html: String,
    text: String,
}

impl WebVersion {
    /// The link to `url`; `None` (a private issue, a preview) fills the
    /// placeholder with nothing.
    pub fn link(url: Option<&str>) -> Self {
        let Some(url) = url else {
            return Self::default();
        };
        let escaped = askama::filters::escape(url, askama::filters::Html)
            .expect("escaping into a string cannot fail");
        Self {
            html: format!(r#"<p><small><a href="{escaped}">Read on the web</a></small></p>"#),
            text: format!("Read on the web: {url}\n"),
        }
    }

    /// As the outbox takes it, beside the recipient's values.
    pub fn markup(&self) -> Markup<'_> {
        Markup {
            key: WEB_VERSION,
            html: &self.html,
            text: &self.text,
        }
    }
}

#[derive(Template)]
#[template(path = "emails/issue.html")]
struct IssueHtml<'a> {
    title: &'a str,
    newsletter_title: &'a str,
    /// One paragraph, possibly empty.
    description: &'a str,
    /// Sanitised HTML: the template inserts it unescaped.
    content: &'a str,
}

#[derive(Template)]
#[template(path = "emails/issue.txt")]
struct IssueText<'a> {
    title: &'a str,
    /// As many `=` as the title has characters.
    underline: &'a str,
    newsletter_title: &'a str,
    /// One paragraph, possibly empty.
    description: &'a str,
    content: &'a str,
}

/// The issue as an email: the draft's title as the subject, its content in
/// both bodies between a greeting and a footer with the unsubscribe link.
/// The bodies hold the placeholders `{{name}}` and `{{unsubscribe_url}}`, and
/// no others, for the outbox to fill for each recipient.
pub fn render(newsletter: &Newsletter, draft: &Draft) -> EmailContent {
    let content = without_the_title_again(draft.title(), draft.content());
    let title = literal_braces(draft.title());
    let newsletter_title = literal_braces(newsletter.title());
    let description = literal_braces(newsletter.description());
    let html_body = IssueHtml {
        title: &title,
        newsletter_title: &newsletter_title,
        description: &description,
        content: &html_fragment(&content),
    }
    .render()
    .expect("the issue templates render infallibly");
    let text_body = IssueText {
        title: &title,
        underline: &"=".repeat(draft.title().chars().count()),
        newsletter_title: &newsletter_title,
        description: &description,
        content: &literal_braces(&plain_text(&content)),
    }
    .render()
    .expect("the issue templates render infallibly");
    EmailContent {
        subject: title.into_owned(),
        html_body,
        text_body,
    }
}

#[derive(Template)]
#[template(path = "emails/welcome.html")]
struct WelcomeHtml<'a> {
    subject: &'a str,
    newsletter_title: &'a str,
    list_name: &'a str,
    /// Sanitised HTML: the template inserts it unescaped.
    content: &'a str,
}

#[derive(Template)]
#[template(path = "emails/welcome.txt")]
struct WelcomeText<'a> {
    subject: &'a str,
    /// As many `=` as the subject has characters.
    underline: &'a str,
    newsletter_title: &'a str,
    list_name: &'a str,
    content: &'a str,
}

/// A list's welcome email: rendered as an issue is, the Markdown sanitised
/// and the author's braces kept from the outbox, with the same
/// placeholders (`{{name}}`, `{{unsubscribe_url}}`, `{{preferences_url}}`)
/// left for [`crate::outbox::personalise`] to fill for each reader.
pub fn welcome(
    newsletter: &Newsletter,
    list_name: &str,
    subject: &str,
    markdown: &str,
) -> EmailContent {
    let content = without_the_title_again(subject, markdown);
    let title = literal_braces(subject);
    let newsletter_title = literal_braces(newsletter.title());
    let list_name = literal_braces(list_name);
    let html_body = WelcomeHtml {
        subject: &title,
        newsletter_title: &newsletter_title,
        list_name: &list_name,
        content: &html_fragment(&content),
    }
    .render()
    .expect("the welcome templates render infallibly");
    let text_body = WelcomeText {
        subject: &title,
        underline: &"=".repeat(subject.chars().count()),
        newsletter_title: &newsletter_title,
        list_name: &list_name,
        content: &literal_braces(&plain_text(&content)),
    }
    .render()
    .expect("the welcome templates render infallibly");
    EmailContent {
        subject: title.into_owned(),
        html_body,
        text_body,
    }
}

/// The content without its first heading when that heading says the title
/// again. The email opens with the title, as its heading, above the
/// greeting; authors often start the Markdown with the same heading, which
/// would then show twice, once on each side of "Hello". The heading goes
/// only when it comes first (nothing but link reference definitions, which
/// stay, before it) and reads the same as the title, in any letter case and
/// spacing, whatever its level and emphasis. A heading that holds more than
/// words stays, whatever it reads: an image's alt text and a link's text
/// arrive as text too, so `# ![Winter issue](banner.png)` reads as the title,
/// and dropping it would drop the banner; raw HTML may carry anything.
fn without_the_title_again<'a>(title: &str, markdown: &'a str) -> Cow<'a, str> {
    let mut events = Parser::new_ext(markdown, markdown_options()).into_offset_iter();
    // A start event's range is the whole element's.
    let Some((Event::Start(Tag::Heading { .. }), heading)) = events.next() else {
        return Cow::Borrowed(markdown);
    };
    let mut words = String::new();
    for (event, _) in events {
        match event {
            Event::End(TagEnd::Heading(_)) => break,
            Event::Text(text) | Event::Code(text) => words.push_str(&text),
            Event::SoftBreak | Event::HardBreak => words.push(' '),
            Event::Start(Tag::Image { .. } | Tag::Link { .. })
            | Event::Html(_)
            | Event::InlineHtml(_) => return Cow::Borrowed(markdown),
            // Emphasis, strikethrough and the like: their words come as text.
            _ => {}
        }
    }
    let same = |a: &str, b: &str| {
        let normal = |text: &str| {
            text.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        };
        normal(a) == normal(b)
    };
    if !same(&words, title) {
        return Cow::Borrowed(markdown);
    }
    // A line break where the heading was, not nothing: the heading ended
    // the block before it, and without it a link definition would take the
    // next line (`"Quoted line"`) for its title. The range starts after an
    // indented heading's spaces, which then stand on a line of their own: a
    // blank line, which ends a block just as well.
    Cow::Owned(format!(
        "{}\n{}",
        &markdown[..heading.start],
        &markdown[heading.end..]
    ))
}

/// Tables and strikethrough, as people know them from GitHub. Links written
/// `<https://…>` are part of CommonMark itself; a bare URL stays text.
fn markdown_options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH
}

/// What the HTML of an issue may keep of the author's: ammonia's allow-list
/// of formatting tags (no script, style, iframe, form or event handler), with
/// links only to web and mail addresses and images only from the web.
/// Relative URLs go: an email has no page to be relative to.
static SANITISER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut builder = ammonia::Builder::default();
    builder
        .url_schemes(HashSet::from(["http", "https", "mailto"]))
        .url_relative(ammonia::UrlRelative::Deny)
        // Already ammonia's default; said here because a link that could
        // reach back into the reader's session (`window.opener`) or tell the
        // target where it came from is what it guards against.
        .link_rel(Some("noopener noreferrer"))
        .attribute_filter(|element, attribute, value| {
            // A `mailto:` image means nothing, and the scheme list above is
            // one for all attributes.
            let web = |url: &str| {
                let url = url.trim_start().to_ascii_lowercase();
                url.starts_with("http://") || url.starts_with("https://")
            };
            match (element, attribute) {
                ("img", "src") if !web(value) => None,
                _ => Some(Cow::Borrowed(value)),
            }
        });
    builder
});

/// The content as sanitised HTML, with no `{` left for the outbox to take
/// for the start of a placeholder.
fn html_fragment(markdown: &str) -> String {
    let mut html = String::with_capacity(markdown.len() + markdown.len() / 2);
    pulldown_cmark::html::push_html(&mut html, Parser::new_ext(markdown, markdown_options()));
    // `{` has no meaning in HTML syntax, and the sanitised fragment carries
    // no script or style in which an entity would not be decoded, so the
    // entity reads as the brace everywhere: in text, in code and in the
    // value of an attribute.
    SANITISER.clean(&html).to_string().replace('{', "&#123;")
}

/// `text` with every `{{` written as the outbox's [`LITERAL_BRACES`], so
/// that braces the author typed come out as typed and are never filled in
/// as a placeholder.
fn literal_braces(text: &str) -> Cow<'_, str> {
    if text.contains("{{") {
        Cow::Owned(text.replace("{{", LITERAL_BRACES))
    } else {
        Cow::Borrowed(text)
    }
}

/// The first `max_chars` characters of the content as plain text, on one
/// line: what a page's description or a link preview shows of an issue.
pub fn summary(markdown: &str, max_chars: usize) -> String {
    let text = plain_text(markdown);
    let mut words = text.split_whitespace();
    let mut summary = String::new();
    for word in words.by_ref() {
        let wanted =
            summary.chars().count() + usize::from(!summary.is_empty()) + word.chars().count();
        if wanted > max_chars {
            summary.push('…');
            break;
        }
        if !summary.is_empty() {
            summary.push(' ');
        }
        summary.push_str(word);
    }
    summary
}

/// The content as plain text, for mail clients that do not show HTML and for
/// people who prefer it: paragraphs apart, headings underlined (`=`, `-`) or
/// marked (`###`), list items after `- ` or `1. `, links as "text (url)",
/// code indented by four spaces, images as their alt text, tables in
/// columns, and raw HTML reduced to its text.
fn plain_text(markdown: &str) -> String {
    let mut writer = PlainText::default();
    for event in Parser::new_ext(markdown, markdown_options()) {
        writer.event(event);
    }
    writer.flush();
    let mut text = writer.out;
    text.truncate(text.trim_end().len());
    text
}

/// Writes Markdown events as text. Inline text gathers in `inline` and is
/// written, line by line under the current indent, when its block ends.
#[derive(Default)]
struct PlainText {
    out: String,
    /// Whether `out` ends in a blank line, so that blocks are set apart by
    /// exactly one.
    blank: bool,
    /// What starts each line: `> ` inside a quote, spaces under a list item.
    indent: Vec<String>,
    /// A list item's marker, waiting for the item's first line, and the
    /// place in `indent` where it goes on that line.
    marker: Option<(usize, String)>,
    /// For each open list, the number of its next item, or `None` for a
    /// bulleted list.
    lists: Vec<Option<u64>>,
    inline: String,
    /// For each open link, where its text starts in `inline` and where it
    /// points.
    links: Vec<(usize, String)>,
    /// The text of the code block being read, if inside one.
    code: Option<String>,
    /// The HTML of the HTML block being read, if inside one: read whole, so
    /// that a script's content is dropped with its tags.
    html: Option<String>,
    /// The rows of the table being read; the first is its head.
    table: Option<Vec<Vec<String>>>,
    row: Vec<String>,
}

impl PlainText {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) => {
                if let Some(code) = &mut self.code {
                    code.push_str(&text);
                } else if let Some(html) = &mut self.html {
                    html.push_str(&text);
                } else {
                    self.inline.push_str(&text);
                }
            }
            Event::Html(html) => match &mut self.html {
                Some(block) => block.push_str(&html),
                None => self.inline.push_str(&html_text(&html)),
            },
            Event::InlineHtml(html) => self.inline.push_str(&html_text(&html)),
            Event::Code(text)
            | Event::InlineMath(text)
            | Event::DisplayMath(text)
            | Event::FootnoteReference(text) => self.inline.push_str(&text),
            // A line break inside a table cell would break its row.
            Event::SoftBreak | Event::HardBreak if self.table.is_some() => self.inline.push(' '),
            Event::SoftBreak | Event::HardBreak => self.inline.push('\n'),
            Event::Rule => {
                self.block_start();
                self.write_lines("----");
            }
            Event::TaskListMarker(done) => self.inline.push_str(if done { "[x] " } else { "[ ] " }),
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Paragraph
            | Tag::Heading { .. }
            | Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
            | Tag::FootnoteDefinition(_)
            | Tag::MetadataBlock(_) => self.block_start(),
            Tag::BlockQuote(_) => {
                self.block_start();
                self.indent.push("> ".into());
            }
            Tag::CodeBlock(_) => {
                self.block_start();
                self.code = Some(String::new());
            }
            Tag::HtmlBlock => {
                self.block_start();
                self.html = Some(String::new());
            }
            Tag::Table(_) => {
                self.block_start();
                self.table = Some(Vec::new());
            }
            Tag::List(first) => {
                self.flush();
                // A list inside an item follows the item's line directly.
                if self.lists.is_empty() {
                    self.gap();
                }
                self.lists.push(first);
            }
            Tag::Item => {
                self.flush();
                // An item that opens with another list still shows its own
                // marker, on a line of its own.
                self.write_pending_marker();
                let marker = match self.lists.last_mut() {
                    Some(Some(number)) => {
                        let marker = format!("{number}. ");
                        *number += 1;
                        marker
                    }
                    _ => "- ".to_owned(),
                };
                self.indent.push(" ".repeat(marker.len()));
                self.marker = Some((self.indent.len() - 1, marker));
            }
            Tag::Link { dest_url, .. } => {
                self.links.push((self.inline.len(), dest_url.into_string()));
            }
            Tag::Strikethrough => self.inline.push_str("~~"),
            Tag::TableHead
            | Tag::TableRow
            | Tag::TableCell
            | Tag::Emphasis
            | Tag::Strong
            | Tag::Superscript
            | Tag::Subscript
            // The alt text arrives as the image's text.
            | Tag::Image { .. } => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Heading(level) => {
                let heading = std::mem::take(&mut self.inline);
                let heading = heading.trim();
                let width = heading.lines().map(|l| l.chars().count()).max();
                match level {
                    HeadingLevel::H1 | HeadingLevel::H2 => {
                        let rule = if level == HeadingLevel::H1 { "=" } else { "-" };
                        self.write_lines(heading);
                        self.write_lines(&rule.repeat(width.unwrap_or(0)));
                    }
                    _ => {
                        let hashes = "#".repeat(level as usize);
                        self.write_lines(&format!("{hashes} {heading}"));
                    }
                }
            }
            TagEnd::BlockQuote(_) => {
                self.flush();
                self.indent.pop();
            }
            TagEnd::CodeBlock => {
                let code = self.code.take().unwrap_or_default();
                for line in code.trim_end_matches('\n').split('\n') {
                    self.write_lines(&format!("    {line}"));
                }
            }
            TagEnd::HtmlBlock => {
                let html = self.html.take().unwrap_or_default();
                self.inline.push_str(&html_text(&html));
                self.flush();
            }
            TagEnd::List(_) => {
                self.flush();
                self.lists.pop();
            }
            TagEnd::Item => {
                self.flush();
                self.write_pending_marker();
                self.indent.pop();
            }
            TagEnd::TableCell => {
                let cell = std::mem::take(&mut self.inline);
                self.row.push(cell.trim().to_owned());
            }
            TagEnd::TableHead | TagEnd::TableRow => {
                let row = std::mem::take(&mut self.row);
                if let Some(rows) = &mut self.table {
                    rows.push(row);
                }
            }
            TagEnd::Table => {
                let rows = self.table.take().unwrap_or_default();
                self.write_table(&rows);
            }
            TagEnd::Link => {
                let Some((start, url)) = self.links.pop() else {
                    return;
                };
                let text = self.inline[start..].trim();
                // An autolink's text is its address: once is enough.
                let said = text == url || Some(text) == url.strip_prefix("mailto:");
                if text.is_empty() {
                    self.inline.push_str(&url);
                } else if !said && !url.is_empty() {
                    self.inline.push_str(&format!(" ({url})"));
                }
            }
            TagEnd::Strikethrough => self.inline.push_str("~~"),
            TagEnd::Paragraph
            | TagEnd::DefinitionList
            | TagEnd::DefinitionListTitle
            | TagEnd::DefinitionListDefinition
            | TagEnd::FootnoteDefinition
            | TagEnd::MetadataBlock(_) => self.flush(),
            TagEnd::Emphasis
            | TagEnd::Strong
            | TagEnd::Superscript
            | TagEnd::Subscript
            | TagEnd::Image => {}
        }
    }

    /// Ends the text before a block and sets the block apart from it.
    fn block_start(&mut self) {
        self.flush();
        self.gap();
    }

    /// Writes the inline text gathered so far, if any.
    fn flush(&mut self) {
        let inline = std::mem::take(&mut self.inline);
        let text = inline.trim();
        if !text.is_empty() {
            self.write_lines(text);
        }
    }

    /// One blank line, unless at the start or after one already.
    fn gap(&mut self) {
        if self.out.is_empty() || self.blank {
            return;
        }
        let prefix: String = self.indent.concat();
        self.out.push_str(prefix.trim_end());
        self.out.push('\n');
        self.blank = true;
    }

    fn write_pending_marker(&mut self) {
        if self.marker.is_some() {
            self.write_lines("");
        }
    }

    /// Writes each line of `text` after the current indent, the first after
    /// a waiting list marker.
    fn write_lines(&mut self, text: &str) {
        for line in text.split('\n') {
            let mut full = String::new();
            let marker = self.marker.take();
            for (depth, piece) in self.indent.iter().enumerate() {
                match &marker {
                    Some((at, marker)) if *at == depth => full.push_str(marker),
                    _ => full.push_str(piece),
                }
            }
            full.push_str(line);
            self.out.push_str(full.trim_end());
            self.out.push('\n');
            self.blank = false;
        }
    }

    /// Columns padded to their widest cell, ` | ` between them, and a rule
    /// under the head.
    fn write_table(&mut self, rows: &[Vec<String>]) {
        let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|column| {
                rows.iter()
                    .filter_map(|row| row.get(column))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for (index, row) in rows.iter().enumerate() {
            let cells: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(column, width)| {
                    let cell = row.get(column).map(String::as_str).unwrap_or("");
                    format!("{cell:<width$}")
                })
                .collect();
            self.write_lines(&cells.join(" | "));
            if index == 0 {
                let rules: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
                self.write_lines(&rules.join("-|-"));
            }
        }
    }
}

/// Strips every tag, dropping the content of script and style, and leaves
/// the text as a reader would see it.
static TAG_STRIPPER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(ammonia::Builder::empty);

/// The text of an HTML snippet.
fn html_text(html: &str) -> String {
    // The serialiser escapes exactly these in text; `&amp;` goes last so
    // that an escaped entity (`&amp;lt;`) comes out as the author wrote it.
    TAG_STRIPPER
        .clean(html)
        .to_string()
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{A0}")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn newsletter() -> Newsletter {
        Newsletter::parse("Rust Weekly", "Stories about rust.", "The Desk").unwrap()
    }

    fn email(content: &str) -> EmailContent {
        render(&newsletter(), &Draft::parse("Issue 1", content).unwrap())
    }

    /// The sender's own filling, with these values, of a private issue.
    fn personalise(content: &EmailContent, values: &[(&str, &str)]) -> EmailContent {
        personalise_public(content, values, None)
    }

    /// The sender's own filling, of an issue whose web version is at `url`.
    fn personalise_public(
        content: &EmailContent,
        values: &[(&str, &str)],
        url: Option<&str>,
    ) -> EmailContent {
        let values = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        crate::outbox::personalise_with(content, &values, WebVersion::link(url).markup())
    }

    #[test]
    fn a_public_issue_links_to_its_web_version_and_a_private_one_does_not() {
        let url = "https://news.example.com/archive/issue-1?a=1&b=2";
        let public = personalise_public(&email("Body."), &RECIPIENT, Some(url));
        assert!(
            public.html_body.contains(
                r#"<a href="https://news.example.com/archive/issue-1?a=1&#38;b=2">Read on the web</a>"#
            ),
            "{}",
            public.html_body
        );
        assert!(
            public
                .text_body
                .contains(&format!("Read on the web: {url}\n")),
            "{}",
            public.text_body
        );
        let private = personalise(&email("Body."), &RECIPIENT);
        for body in [&private.html_body, &private.text_body] {
            assert!(!body.contains("Read on the web"), "{body}");
            assert!(!body.contains("web_version"), "{body}");
        }
    }

    #[test]
    fn an_author_cannot_place_the_web_version_link_or_a_placeholder_with_it() {
        let draft = Draft::parse("T", "{{web_version}} and {{name}}").unwrap();
        let filled = personalise_public(
            &render(&newsletter(), &draft),
            &RECIPIENT,
            Some("https://news.example.com/archive/t"),
        );
        assert!(
            filled.text_body.contains("{{web_version}} and {{name}}"),
            "{}",
            filled.text_body
        );
        assert_eq!(filled.text_body.matches("Read on the web").count(), 1);
        assert_eq!(filled.html_body.matches("Read on the web").count(), 1);
    }

    #[test]
    fn a_welcome_names_its_list_and_leaves_only_the_recipients_placeholders_to_fill() {
        let welcome = welcome(
            &newsletter(),
            "<b>Events</b> {{x}}",
            "Welcome {{name}}",
            "Hello <script>alert(1)</script>**there** {{preferences_url}}",
        );
        let filled = personalise(&welcome, &RECIPIENT);
        // The author's braces, in the subject, the list's name and the
        // body, come out as typed; the template's own are filled.
        assert_eq!(filled.subject, "Welcome {{name}}");
        assert!(
            filled.text_body.contains("Hello Ada & Bob,"),
            "{}",
            filled.text_body
        );
        assert!(
            filled
                .text_body
                .contains("joined <b>Events</b> {{x}} of Rust Weekly"),
            "{}",
            filled.text_body
        );
        assert!(
            filled.text_body.contains("there {{preferences_url}}"),
            "{}",
            filled.text_body
        );
        assert!(
            filled.html_body.contains("&#60;b&#62;Events&#60;/b&#62;"),
            "{}",
            filled.html_body
        );
        assert!(
            !filled.html_body.contains("<script"),
            "{}",
            filled.html_body
        );
        assert!(
            filled.html_body.contains("<strong>there</strong>"),
            "{}",
            filled.html_body
        );
        assert!(
            filled.html_body.contains("unsubscribe?token=a&#38;b"),
            "{}",
            filled.html_body
        );
    }

    const RECIPIENT: [(&str, &str); 3] = [
        (RECIPIENT_NAME, "Ada & Bob"),
        (
            UNSUBSCRIBE_URL,
            "https://news.example.com/unsubscribe?token=a&b",
        ),
        (
            PREFERENCES_URL,
            "https://news.example.com/preferences?key=p&q",
        ),
    ];

    #[test]
    fn headings_lists_links_code_and_tables_become_html() {
        let html = email(
            "# Big\n\n## Small\n\n- one\n- two\n\n1. first\n2. second\n\n\
             [docs](https://docs.example.com) and <https://auto.example.com>\n\n\
             ```\nlet x = 1;\n```\n\n`inline`\n\n| Name | Age |\n|---|---|\n| Ada | 36 |\n\n~~old~~",
        )
        .html_body;
        for expected in [
            "<h1>Big</h1>",
            "<h2>Small</h2>",
            "<ul>\n<li>one</li>\n<li>two</li>\n</ul>",
            "<ol>\n<li>first</li>\n<li>second</li>\n</ol>",
            r#"<a href="https://docs.example.com" rel="noopener noreferrer">docs</a>"#,
            r#"<a href="https://auto.example.com" rel="noopener noreferrer">https://auto.example.com</a>"#,
            "<pre><code>let x = 1;\n</code></pre>",
            "<code>inline</code>",
            "<th>Name</th><th>Age</th>",
            "<td>Ada</td><td>36</td>",
            "<del>old</del>",
        ] {
            assert!(html.contains(expected), "{expected}\n{html}");
        }
    }

    #[test]
    fn dangerous_html_in_the_markdown_is_removed() {
        let cases = [
            ("<script>alert(1)</script>", ["<script", "alert(1)"]),
            (
                "<img src=\"https://x.example/a.png\" onerror=\"alert(1)\">",
                ["onerror", "alert(1)"],
            ),
            (
                "<a href=\"javascript:alert(1)\">click</a>",
                ["javascript:", "alert(1)"],
            ),
            ("[click](javascript:alert(1))", ["javascript:", "alert(1)"]),
            (
                "<iframe src=\"https://evil.example\"></iframe>",
                ["<iframe", "evil.example"],
            ),
            (
                "<style>body { display: none }</style>",
                ["<style", "display"],
            ),
            ("<p style=\"position: fixed\">x</p>", ["style=", "fixed"]),
            (
                "<form action=\"https://evil.example\"><input></form>",
                ["<form", "<input"],
            ),
        ];
        for (markdown, forbidden) in cases {
            let html = email(&format!("Before.\n\n{markdown}\n\nAfter.")).html_body;
            for word in forbidden {
                assert!(!html.contains(word), "{markdown:?} left {word:?}:\n{html}");
            }
            assert!(html.contains("After."), "{markdown:?} swallowed the rest");
        }
    }

    #[test]
    fn basic_formatting_in_raw_html_is_kept() {
        let html = email("<b>bold</b> <i>it</i> <a href=\"https://x.example\">x</a>").html_body;
        assert!(html.contains("<b>bold</b>"), "{html}");
        assert!(html.contains("<i>it</i>"), "{html}");
        assert!(
            html.contains(r#"<a href="https://x.example" rel="noopener noreferrer">x</a>"#),
            "{html}"
        );
    }

    #[test]
    fn a_raw_html_link_with_its_own_rel_gets_ours() {
        let html = email("<a href=\"https://x.example\" rel=\"opener\">x</a>").html_body;
        assert!(html.contains(r#"rel="noopener noreferrer""#), "{html}");
        assert!(!html.contains(r#"rel="opener""#), "{html}");
    }

    #[test]
    fn images_are_kept_only_from_web_addresses() {
        let kept = email("![cat](https://img.example/cat.png)").html_body;
        assert!(
            kept.contains(r#"<img src="https://img.example/cat.png" alt="cat">"#),
            "{kept}"
        );
        for src in [
            "data:image/png;base64,AAAA",
            "javascript:alert(1)",
            "mailto:a@example.com",
            "/relative.png",
            "cid:part1",
        ] {
            let html = email(&format!("![x]({src})\n\n<img src=\"{src}\">")).html_body;
            assert!(!html.contains(src), "{src}:\n{html}");
        }
    }

    #[test]
    fn relative_links_lose_their_address() {
        let html = email("[home](/home)").html_body;
        assert!(!html.contains("/home"), "{html}");
        assert!(html.contains("home</a>"), "{html}");
    }

    /// How often `needle` occurs in `haystack`.
    fn occurrences(haystack: &str, needle: &str) -> usize {
        haystack.matches(needle).count()
    }

    #[test]
    fn content_that_opens_with_the_title_as_a_heading_shows_the_title_once() {
        for (case, content) in [
            (
                "the same heading",
                "# Winter issue\n\nThe programme is out.",
            ),
            ("another level", "## Winter issue\n\nThe programme is out."),
            (
                "another case and spacing",
                "#  WINTER   Issue \n\nThe programme is out.",
            ),
            ("formatted", "# *Winter* issue\n\nThe programme is out."),
            (
                "underlined",
                "Winter issue\n============\n\nThe programme is out.",
            ),
            (
                "after blank lines",
                "\n\n# Winter issue\n\nThe programme is out.",
            ),
        ] {
            let email = render(
                &newsletter(),
                &Draft::parse("Winter issue", content).unwrap(),
            );
            let html = email.html_body.to_lowercase();
            assert_eq!(
                occurrences(&html, "<h1>winter issue</h1>"),
                1,
                "{case}: {html}"
            );
            assert_eq!(occurrences(&html, "winter</em> issue"), 0, "{case}: {html}");
            assert!(!html.contains("<h2>"), "{case}: {html}");
            assert!(
                html.contains("<p>the programme is out.</p>"),
                "{case}: {html}"
            );
            let text = email.text_body.to_lowercase();
            assert_eq!(occurrences(&text, "winter issue"), 1, "{case}: {text}");
            assert!(text.contains("the programme is out."), "{case}: {text}");
        }
    }

    #[test]
    fn a_heading_that_differs_from_the_title_or_does_not_come_first_stays() {
        for (case, content, kept) in [
            (
                "another heading",
                "# Winter news\n\nOut.",
                "<h1>Winter news</h1>",
            ),
            (
                "a longer heading",
                "# Winter issue, part 2\n\nOut.",
                "<h1>Winter issue, part 2</h1>",
            ),
            (
                "not first",
                "Out now.\n\n# Winter issue",
                "<h1>Winter issue</h1>",
            ),
            ("a paragraph", "Winter issue\n\nOut.", "<p>Winter issue</p>"),
        ] {
            let html = render(
                &newsletter(),
                &Draft::parse("Winter issue", content).unwrap(),
            )
            .html_body;
            assert!(html.contains(kept), "{case}: {html}");
        }
    }

    #[test]
    fn a_link_definition_before_a_repeated_title_is_kept() {
        let content =
            "[site]: https://example.com/winter\n\n# Winter issue\n\nSee [the site][site].";
        let html = render(
            &newsletter(),
            &Draft::parse("Winter issue", content).unwrap(),
        )
        .html_body;
        assert_eq!(occurrences(&html, "Winter issue</h1>"), 1, "{html}");
        assert!(
            html.contains(
                r#"<a href="https://example.com/winter" rel="noopener noreferrer">the site</a>"#
            ),
            "{html}"
        );
    }

    #[test]
    fn a_heading_that_says_the_title_with_an_image_a_link_or_html_stays() {
        for (case, content, kept) in [
            (
                "a banner",
                "# ![Winter issue](https://cdn.example/banner.png)\n\nOut.",
                r#"<img src="https://cdn.example/banner.png" alt="Winter issue">"#,
            ),
            (
                "a link",
                "# [Winter issue](https://site.example/)\n\nOut.",
                r#"<a href="https://site.example/" rel="noopener noreferrer">Winter issue</a>"#,
            ),
            (
                "a reference link",
                "[site]: https://site.example/\n\n# [Winter issue][site]\n\nOut.",
                r#"<a href="https://site.example/" rel="noopener noreferrer">Winter issue</a>"#,
            ),
            (
                "inline html",
                "# <b>Winter issue</b>\n\nOut.",
                "<b>Winter issue</b>",
            ),
            (
                "an html comment",
                "# Winter issue<!-- draft -->\n\nOut.",
                "<h1>Winter issue</h1>",
            ),
        ] {
            let html = render(
                &newsletter(),
                &Draft::parse("Winter issue", content).unwrap(),
            )
            .html_body;
            assert!(html.contains(kept), "{case}: {html}");
            assert!(html.contains("<p>Out.</p>"), "{case}: {html}");
        }
    }

    #[test]
    fn dropping_the_title_does_not_join_the_lines_around_it() {
        for (case, content) in [
            (
                "after a link definition",
                "[site]: https://site.example/\n# Winter issue\n\"Quoted line\"",
            ),
            (
                "indented, after a link definition",
                "[site]: https://site.example/\n   # Winter issue\n\"Quoted line\"",
            ),
            (
                "underlined, after a link definition",
                "[site]: https://site.example/\nWinter issue\n===\n\"Quoted line\"",
            ),
        ] {
            let email = render(
                &newsletter(),
                &Draft::parse("Winter issue", content).unwrap(),
            );
            let html = &email.html_body;
            assert_eq!(occurrences(html, "Winter issue</h1>"), 1, "{case}: {html}");
            assert!(
                html.contains("<p>&#34;Quoted line&#34;</p>")
                    || html.contains("<p>&quot;Quoted line&quot;</p>")
                    || html.contains("<p>\"Quoted line\"</p>"),
                "{case}: the line is a paragraph, not the definition's title: {html}"
            );
            assert!(
                email.text_body.contains("\"Quoted line\""),
                "{case}: {}",
                email.text_body
            );
        }
    }

    #[test]
    fn the_title_is_escaped_in_the_html_body_and_kept_as_typed_in_subject_and_text() {
        let draft = Draft::parse("Tips & <b>tricks</b>", "Body.").unwrap();
        let email = render(&newsletter(), &draft);
        assert_eq!(email.subject, "Tips & <b>tricks</b>");
        assert!(
            email
                .html_body
                .contains("<h1>Tips &#38; &#60;b&#62;tricks&#60;/b&#62;</h1>"),
            "{}",
            email.html_body
        );
        assert!(
            !email.html_body.contains("<b>tricks"),
            "{}",
            email.html_body
        );
        assert!(
            email.text_body.contains("Tips & <b>tricks</b>\n====="),
            "{}",
            email.text_body
        );
    }

    #[test]
    fn the_newsletters_title_and_description_are_escaped_in_the_html_body() {
        let newsletter = Newsletter::parse("R&D <Weekly>", "About <i>things</i>.", "D").unwrap();
        let email = render(&newsletter, &Draft::parse("T", "Body.").unwrap());
        assert!(
            email.html_body.contains("R&#38;D &#60;Weekly&#62;"),
            "{}",
            email.html_body
        );
        assert!(
            email.html_body.contains("About &#60;i&#62;things"),
            "{}",
            email.html_body
        );
        assert!(
            email
                .text_body
                .contains("R&D <Weekly>: About <i>things</i>."),
            "{}",
            email.text_body
        );
    }

    #[test]
    fn the_template_greets_the_recipient_and_gives_their_unsubscribe_link_once_filled() {
        let email = personalise(&email("Body."), &RECIPIENT);
        let html = &email.html_body;
        assert!(html.contains("<p>Hello Ada &#38; Bob,</p>"), "{html}");
        assert!(
            html.contains(
                r#"<a href="https://news.example.com/unsubscribe?token=a&#38;b">Unsubscribe</a>"#
            ),
            "{html}"
        );
        let text = &email.text_body;
        assert!(text.contains("Hello Ada & Bob,\n"), "{text}");
        assert!(
            text.contains("\nhttps://news.example.com/unsubscribe?token=a&b\n")
                || text.ends_with("\nhttps://news.example.com/unsubscribe?token=a&b"),
            "the link on a line of its own:\n{text}"
        );
        assert!(
            html.contains(r#"<a href="https://news.example.com/preferences?key=p&#38;q">"#),
            "{html}"
        );
        assert!(
            text.contains("\nhttps://news.example.com/preferences?key=p&q"),
            "{text}"
        );
        assert!(
            !html.contains("{{") && !text.contains("{{"),
            "{html}\n{text}"
        );
    }

    #[test]
    fn placeholders_the_author_typed_stay_as_typed_once_the_outbox_has_filled_its_own() {
        let typed = "Write {{name}} or {{unsubscribe_url}}, even `{{name}}` and {{{name}}}.";
        let draft = Draft::parse("Hi {{name}}", &format!("{typed}\n\n    {{{{name}}}}\n")).unwrap();
        let newsletter = Newsletter::parse("{{name}} Weekly", "{{unsubscribe_url}}", "D").unwrap();
        let email = personalise(&render(&newsletter, &draft), &RECIPIENT);

        assert_eq!(&email.subject.to_owned(), "Hi {{name}}");
        let text = &email.text_body.to_owned();
        // Inline code is plain text in plain text: the backticks go.
        assert!(
            text.contains("Write {{name}} or {{unsubscribe_url}}, even {{name}} and {{{name}}}."),
            "{text}"
        );
        assert!(text.contains("\n    {{name}}\n"), "the code block:\n{text}");
        assert!(
            text.contains("{{name}} Weekly: {{unsubscribe_url}}"),
            "{text}"
        );
        // The recipient's values appear where the template put them only.
        assert_eq!(text.matches("Ada & Bob").count(), 1, "{text}");
        assert_eq!(text.matches("token=a&b").count(), 1, "{text}");

        let html = &email.html_body;
        assert!(
            html.contains(
                "Write &#123;&#123;name}} or &#123;&#123;unsubscribe_url}}, even \
                 <code>&#123;&#123;name}}</code> and &#123;&#123;&#123;name}}}."
            ),
            "{html}"
        );
        assert_eq!(html.matches("Ada &#38; Bob").count(), 1, "{html}");
        assert_eq!(html.matches("token=a&#38;b").count(), 1, "{html}");
        assert!(html.to_owned().contains("<h1>Hi {{name}}</h1>"), "{html}");
    }

    #[test]
    fn a_link_the_author_wrote_with_a_placeholder_in_it_is_not_filled() {
        let email = personalise(
            &email("[me](https://x.example/?u={{unsubscribe_url}})"),
            &RECIPIENT,
        );
        assert_eq!(
            email.html_body.matches("token=a").count(),
            1,
            "{}",
            email.html_body
        );
        assert_eq!(
            email.text_body.matches("token=a").count(),
            1,
            "{}",
            email.text_body
        );
    }

    #[test]
    fn the_plain_text_reads_like_the_markdown_it_came_from() {
        let text = plain_text(
            "# Big news\n\nFirst paragraph\nwraps here.\n\nSecond with a [link](https://x.example) \
             and <https://auto.example>.\n\n## Smaller\n\n### Smallest\n\n\
             - one\n- two\n  - nested\n\n3. three\n4. four\n\n> quoted\n\n\
             ```\nfn main() {\n    go();\n}\n```\n\n![a cat](https://img.example/cat.png)\n\n\
             | Name | Age |\n|---|---|\n| Ada | 36 |\n| Grace Hopper | 85 |\n\n---\n\nEnd *with* **style**.",
        );
        let expected = "\
Big news
========

First paragraph
wraps here.

Second with a link (https://x.example) and https://auto.example.

Smaller
-------

### Smallest

- one
- two
  - nested

3. three
4. four

> quoted

    fn main() {
        go();
    }

a cat

Name         | Age
-------------|----
Ada          | 36
Grace Hopper | 85

----

End with style.";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn loose_list_items_are_set_apart_and_keep_their_paragraphs_indented() {
        let text = plain_text("1. first\n\n   more of it\n\n2. second\n");
        assert_eq!(text, "1. first\n\n   more of it\n\n2. second");
    }

    #[test]
    fn the_plain_text_has_no_html_tags() {
        let markdown = "<div>Block <b>bold</b> &amp; done</div>\n\n\
             Inline <i>it</i> <span title=\"x\">span</span><br>\n\n\
             <script>alert(1)</script>\n\n<style>p { color: red }</style>\n\n\
             <img src=\"https://x.example/a.png\" alt=\"pic\"> <a href=\"https://x.example\">x</a>";
        let text = email(markdown).text_body;
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
        assert!(text.contains("Block bold & done"), "{text}");
        assert!(text.contains("Inline it span"), "{text}");
        assert!(
            !text.contains("alert(1)") && !text.contains("color"),
            "{text}"
        );
    }

    #[test]
    fn the_description_is_left_out_when_the_newsletter_has_none() {
        let newsletter = Newsletter::parse("Rust Weekly", "", "D").unwrap();
        let email = render(&newsletter, &Draft::parse("T", "Body.").unwrap());
        assert!(
            !email.text_body.contains("Rust Weekly: "),
            "{}",
            email.text_body
        );
        assert!(
            !email.html_body.contains("Rust Weekly: "),
            "{}",
            email.html_body
        );
        let with = self::email("Body.");
        assert!(with.text_body.contains("Rust Weekly: Stories about rust."));
        assert!(with.html_body.contains("Rust Weekly: Stories about rust."));
    }

    /// Markdown-ish text: fragments that stress the parser and the
    /// sanitiser, glued together in any order.
    fn markdownish() -> impl Strategy<Value = String> {
        let fragment = prop_oneof![
            "[^\\p{Cc}]{0,12}",
            Just("\n".to_owned()),
            Just("\n\n".to_owned()),
            Just("<script>alert(1)</script>".to_owned()),
            Just("<SCRIPT SRC=//x.example/a.js>".to_owned()),
            Just("<scr<script>ipt>".to_owned()),
            Just("<img src=x onerror=alert(1)>".to_owned()),
            Just("<iframe src=https://x.example>".to_owned()),
            Just("<style>".to_owned()),
            Just("<!--".to_owned()),
            Just("-->".to_owned()),
            Just("[a](javascript:alert(1))".to_owned()),
            Just("<https://x.example>".to_owned()),
            Just("`".to_owned()),
            Just("```\n".to_owned()),
            Just("    ".to_owned()),
            Just("- ".to_owned()),
            Just("1. ".to_owned()),
            Just("> ".to_owned()),
            Just("# ".to_owned()),
            Just("| a | b |\n|---|---|\n".to_owned()),
            Just("{{".to_owned()),
            Just("{".to_owned()),
            Just("}}".to_owned()),
            Just("name".to_owned()),
            Just("&#123;".to_owned()),
            Just("\\".to_owned()),
        ];
        prop::collection::vec(fragment, 1..30).prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn any_content_renders_without_script_and_fills_only_the_templates_placeholders(
            content in markdownish()
        ) {
            let Ok(draft) = Draft::parse("Title", &content) else {
                return Ok(());
            };
            let email = render(&newsletter(), &draft);
            let html = email.html_body.to_ascii_lowercase();
            for tag in ["<script", "<style", "<iframe"] {
                prop_assert!(!html.contains(tag), "{} in\n{}", tag, email.html_body);
            }
            // Whatever braces the author typed, only the template's own two
            // placeholders are filled.
            let filled = personalise(
                &email,
                &[(RECIPIENT_NAME, "NAME-VALUE"), (UNSUBSCRIBE_URL, "UNSUBSCRIBE-VALUE")],
            );
            for body in [&filled.html_body, &filled.text_body] {
                prop_assert_eq!(body.matches("NAME-VALUE").count(), 1, "{}", body);
                prop_assert_eq!(body.matches("UNSUBSCRIBE-VALUE").count(), 1, "{}", body);
            }
        }
    }
}
