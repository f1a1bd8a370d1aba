//! The newsletter pages' templates (`src/templates/admin/newsletter*.html`).

use askama::Template;

use super::view::ProgressView;
use crate::admin::pages::templates::Nav;
use crate::domain::Newsletter;
use crate::pages::ListChoice;

/// One issue in the list.
pub struct IssueRow {
    pub path: String,
    pub title: String,
    pub state: &'static str,
    pub send_at: String,
    pub recipients: i64,
    pub queued: i64,
    pub sent: i64,
    pub failed: i64,
    pub skipped: i64,
}

/// One draft in the list.
pub struct DraftRow {
    pub path: String,
    pub title: String,
    /// When it was last saved, in UTC.
    pub updated_at: String,
}

#[derive(Template)]
#[template(path = "admin/newsletters.html")]
pub struct NewslettersPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    /// The latest drafts, newest first.
    pub drafts: Vec<DraftRow>,
    /// Whether there are more drafts than the list shows.
    pub more_drafts: bool,
    pub rows: Vec<IssueRow>,
}

/// Where a compose form is sent: the new issue's form, or a draft's page,
/// whose Save changes the draft and whose Publish publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormTarget {
    New,
    Draft(uuid::Uuid),
}

impl FormTarget {
    /// The address the form posts to.
    pub fn action(&self) -> String {
        match self {
            FormTarget::New => "/admin/newsletters".into(),
            FormTarget::Draft(id) => draft_path(*id),
        }
    }

    /// Where the draft's Delete button posts to; `None` for a new issue.
    pub fn delete_action(&self) -> Option<String> {
        match self {
            FormTarget::New => None,
            FormTarget::Draft(id) => Some(format!("{}/delete", draft_path(*id))),
        }
    }

    pub fn is_draft(&self) -> bool {
        matches!(self, FormTarget::Draft(_))
    }
}

/// Where a draft's page is: under `drafts/`, so that it never reads as an
/// issue's id.
pub fn draft_path(id: uuid::Uuid) -> String {
    format!("/admin/newsletters/drafts/{id}")
}

/// What the compose form holds: as typed, so that nothing is lost when it
/// is shown again.
pub struct ComposeFields<'a> {
    /// Where the form is sent.
    pub target: FormTarget,
    pub title: &'a str,
    pub content: &'a str,
    pub send_at: &'a str,
    /// The same for every showing of one form; see `compose`.
    pub idempotency_key: String,
    /// The lists it goes to, as checkboxes; none when there is only one
    /// list (the issue then goes to every confirmed subscriber).
    pub lists: Vec<ListChoice>,
    /// The saved segments, one of which may narrow the audience.
    pub segments: Vec<SegmentChoice>,
    /// Who it goes to, as the form says now: what the count counts.
    pub audience: AudienceChoice,
    /// Whether it goes in the public archive as it is published.
    pub public: bool,
}

/// A saved segment as an option of the form's select.
#[derive(Debug, Clone)]
pub struct SegmentChoice {
    pub id: String,
    pub name: String,
    pub selected: bool,
}

/// Who an issue goes to: the confirmed readers of `lists` (`None`: every
/// confirmed subscriber), narrowed by `segment`.
#[derive(Debug, Clone, Default)]
pub struct AudienceChoice {
    pub lists: Option<Vec<uuid::Uuid>>,
    pub segment: Option<crate::subscribers::segments::Filter>,
}

/// Why the form was refused, and the field it is about, if one.
pub struct Refusal {
    pub field: Option<&'static str>,
    pub reason: String,
}

/// The email as a recipient would get it.
pub struct Preview {
    pub subject: String,
    /// A whole HTML document, shown in a sandboxed frame (the template
    /// escapes it into the frame's `srcdoc` attribute).
    pub html: String,
    pub text: String,
}

#[derive(Template)]
#[template(path = "admin/newsletter_new.html")]
pub struct ComposePage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub fields: ComposeFields<'a>,
    pub refusal: Option<Refusal>,
    pub notice: Option<String>,
    pub preview: Option<Preview>,
    /// What the publish button's dialog asks: "Send to 1,204 subscribers?"
    pub publish_question: String,
    /// When the draft shown was last saved, on its page as first opened.
    pub saved_at: Option<String>,
    /// The issue the draft became, when it was published meanwhile (from
    /// another tab): where the editor finds it.
    pub published: Option<String>,
}

impl ComposePage<'_> {
    /// The reason to show next to `field`, if it was the one refused.
    pub fn error_for(&self, field: &str) -> Option<&str> {
        self.refusal
            .as_ref()
            .filter(|r| r.field == Some(field))
            .map(|r| r.reason.as_str())
    }

    /// A reason that is about no field in particular.
    pub fn general_error(&self) -> Option<&str> {
        self.refusal
            .as_ref()
            .filter(|r| r.field.is_none())
            .map(|r| r.reason.as_str())
    }
}

/// The publish question, for a form sent without scripts: the form's
/// fields again, hidden, under a button that publishes them.
#[derive(Template)]
#[template(path = "admin/newsletter_confirm.html")]
pub struct PublishConfirmPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub fields: ComposeFields<'a>,
    /// "Send to 1,204 subscribers?"
    pub question: String,
    /// "1,204 subscribers", or "every confirmed subscriber" when they
    /// could not be counted.
    pub audience: String,
    /// Whether `audience` is a count.
    pub counted: bool,
    /// When it goes out, if later than at once.
    pub send_at: Option<String>,
}

/// One recipient who did not get the issue.
pub struct UndeliveredRow {
    /// Empty once the subscriber was erased.
    pub email: String,
    pub status: String,
    pub reason: String,
    pub attempts: i16,
}

#[derive(Template)]
#[template(path = "admin/newsletter.html")]
pub struct IssuePage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub path: String,
    pub title: String,
    pub subject: String,
    pub text_body: String,
    pub send_at: String,
    pub created_at: String,
    pub progress: ProgressView,
    /// How many emails each provider took, as of when the page was loaded.
    pub providers: Vec<(String, i64)>,
    pub undelivered: Vec<UndeliveredRow>,
    /// Whether the list starts after its beginning (`?after=`).
    pub later_page: bool,
    pub next_page: Option<String>,
    /// Why the last action was refused.
    pub error: Option<String>,
    /// Where the issue is in the public archive; `None` while it is
    /// private.
    pub web_path: Option<String>,
}

impl IssuePage<'_> {
    /// The states in which a button applies, for the page and for its
    /// script, which shows and hides the buttons as the state changes.
    pub fn states_for(action: &str) -> &'static str {
        match action {
            "pause" => "sending scheduled",
            "resume" => "paused",
            "cancel" => "sending scheduled paused",
            // Also needs failed deliveries; the script checks that too.
            "requeue" => "sending scheduled paused done",
            _ => "",
        }
    }

    pub fn shows(&self, action: &str) -> bool {
        let applies = Self::states_for(action)
            .split(' ')
            .any(|state| state == self.progress.state);
        applies && (action != "requeue" || self.progress.failed > 0)
    }

    /// Whether a browser without scripts should reload to follow along.
    pub fn refreshes(&self) -> bool {
        self.progress.state == "sending"
    }
}

#[derive(Template)]
#[template(path = "admin/newsletter_missing.html")]
pub struct IssueMissingPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
}

#[derive(Template)]
#[template(path = "admin/newsletter_draft_missing.html")]
pub struct DraftMissingPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_in_state<'a>(
        newsletter: &'a Newsletter,
        state: &'static str,
        failed: i64,
    ) -> IssuePage<'a> {
        IssuePage {
            newsletter,
            nav: Nav {
                username: "ada",
                csrf_token: "token",
                inbox: false,
            },
            path: "/admin/newsletters/x".into(),
            title: "Title".into(),
            subject: "Title".into(),
            text_body: String::new(),
            send_at: String::new(),
            created_at: String::new(),
            progress: ProgressView {
                state,
                recipients: 10,
                queued: 10 - failed,
                sent: 0,
                failed,
                skipped: 0,
                bounced: 0,
                complained: 0,
                paused_reason: None,
                percent: 0,
                rate: "–".into(),
                time_left: "–".into(),
                finished: matches!(state, "done" | "cancelled"),
                audience_complete: true,
            },
            providers: vec![("postmark".into(), 0)],
            undelivered: Vec::new(),
            later_page: false,
            next_page: None,
            error: None,
            web_path: None,
        }
    }

    #[test]
    fn without_scripts_only_a_sending_issue_reloads_itself() {
        let newsletter = Newsletter::parse("Weekly", "", "Desk").unwrap();
        let refresh = r#"<noscript><meta http-equiv="refresh" content="5"></noscript>"#;
        for (state, reloads) in [
            ("sending", true),
            ("scheduled", false),
            ("paused", false),
            ("done", false),
            ("cancelled", false),
        ] {
            let page = page_in_state(&newsletter, state, 0).render().unwrap();
            assert_eq!(page.contains(refresh), reloads, "{state}");
        }
    }

    #[test]
    fn each_state_offers_only_the_actions_it_allows() {
        let newsletter = Newsletter::parse("Weekly", "", "Desk").unwrap();
        for (state, failed, offered) in [
            ("sending", 0, &["pause", "cancel"][..]),
            ("sending", 2, &["pause", "cancel", "requeue"][..]),
            ("paused", 0, &["resume", "cancel"][..]),
            ("done", 1, &["requeue"][..]),
            ("cancelled", 1, &[][..]),
        ] {
            let page = page_in_state(&newsletter, state, failed);
            let shown: Vec<&str> = ["pause", "resume", "cancel", "requeue"]
                .into_iter()
                .filter(|action| page.shows(action))
                .collect();
            assert_eq!(shown, offered, "{state} with {failed} failed");
        }
    }
}
