//! An issue's progress as people read it, in one shape for the page and
//! for its live updates, so that both say the same in the same words.

use serde::Serialize;
use uuid::Uuid;

use crate::campaigns::ledger::{IssueState, Progress};

/// Where an issue stands, with its figures ready to show.
#[derive(Debug, Clone, Serialize)]
pub struct ProgressView {
    /// `sending`, `scheduled`, `paused`, `cancelled` or `done`.
    pub state: &'static str,
    pub recipients: i64,
    pub queued: i64,
    pub sent: i64,
    pub failed: i64,
    pub skipped: i64,
    /// Of those sent, reported back as hard bounces.
    pub bounced: i64,
    /// Of those sent, marked as spam by their recipient.
    pub complained: i64,
    /// Why the issue paused itself, when it did (the complaint guard).
    pub paused_reason: Option<String>,
    pub percent: u8,
    /// "12.5 emails a second", or "–" before there is anything to measure.
    pub rate: String,
    /// "about 3 min", or "–" when the issue is not sending.
    pub time_left: String,
    /// Nothing will change any more unless an admin acts: done or cancelled.
    pub finished: bool,
    /// Whether every recipient is recorded: until then, the counts grow.
    pub audience_complete: bool,
}

impl ProgressView {
    pub fn new(progress: &Progress) -> Self {
        let summary = &progress.summary;
        let state = summary.state();
        Self {
            state: summary.label(),
            recipients: summary.recipients,
            queued: summary.queued(),
            sent: summary.sent,
            failed: summary.failed,
            skipped: summary.skipped,
            bounced: summary.bounced,
            complained: summary.complained,
            // Kept by a cancelled issue too, but said only while paused:
            // once an admin acts, it is their decision that stands.
            paused_reason: summary
                .paused_reason
                .clone()
                .filter(|_| state == IssueState::Paused),
            percent: progress.percent(),
            rate: match progress.rate_per_second {
                // Paused or cancelled, the average since sending began says
                // nothing about what comes next.
                Some(rate) if matches!(state, IssueState::Sending | IssueState::Done) => {
                    rate_text(rate)
                }
                _ => "–".into(),
            },
            time_left: progress
                .seconds_left()
                .map_or_else(|| "–".into(), duration_text),
            finished: matches!(state, IssueState::Done | IssueState::Cancelled),
            audience_complete: summary.audience_complete,
        }
    }
}

/// Where an issue's page is.
pub fn issue_path(id: Uuid) -> String {
    format!("/admin/newsletters/{id}")
}

/// An issue id from an address. Anything that is not one names no issue:
/// the caller answers 404, as for an id that matches nothing.
pub fn parse_issue_id(raw: &str) -> Option<Uuid> {
    Uuid::try_parse(raw).ok()
}

/// A count of subscribers as a sentence says it: "1 subscriber",
/// "1,204 subscribers".
pub fn subscribers_text(count: i64) -> String {
    let noun = if count == 1 {
        "subscriber"
    } else {
        "subscribers"
    };
    format!("{} {noun}", thousands(count))
}

/// Who publishing sends to, as a sentence says it: "1,204 subscribers", or,
/// when they could not be counted just now, "every confirmed subscriber".
pub fn audience_text(audience: Option<i64>) -> String {
    audience.map_or_else(|| "every confirmed subscriber".into(), subscribers_text)
}

/// What publishing asks before it sends: "Send to 1,204 subscribers?", or
/// "Send to every confirmed subscriber?" without a count.
pub fn publish_question(audience: Option<i64>) -> String {
    format!("Send to {}?", audience_text(audience))
}

/// `count` with a comma between each group of three digits.
fn thousands(count: i64) -> String {
    let digits = count.unsigned_abs().to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if count < 0 {
        grouped.push('-');
    }
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

fn rate_text(per_second: f64) -> String {
    if per_second >= 10.0 {
        format!("{per_second:.0} emails a second")
    } else {
        format!("{per_second:.1} emails a second")
    }
}

/// Rounded to what a person waiting needs: seconds under a minute, then
/// minutes, then hours and minutes.
fn duration_text(seconds: u64) -> String {
    match seconds {
        0 => "under a second".into(),
        1..60 => format!("about {seconds} s"),
        60..3600 => format!("about {} min", seconds.div_ceil(60)),
        _ => {
            let minutes = seconds.div_ceil(60);
            format!("about {} h {} min", minutes / 60, minutes % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_left_are_rounded_for_a_person() {
        assert_eq!(duration_text(0), "under a second");
        assert_eq!(duration_text(45), "about 45 s");
        assert_eq!(duration_text(61), "about 2 min");
        assert_eq!(duration_text(3600), "about 1 h 0 min");
        assert_eq!(duration_text(7500), "about 2 h 5 min");
    }

    #[test]
    fn the_publish_question_names_the_count_with_thousands_separators_and_one_in_the_singular_or_none_without_one()
     {
        for (audience, question) in [
            (0, "Send to 0 subscribers?"),
            (1, "Send to 1 subscriber?"),
            (2, "Send to 2 subscribers?"),
            (999, "Send to 999 subscribers?"),
            (1_000, "Send to 1,000 subscribers?"),
            (1_204, "Send to 1,204 subscribers?"),
            (12_345, "Send to 12,345 subscribers?"),
            (1_234_567, "Send to 1,234,567 subscribers?"),
        ] {
            assert_eq!(publish_question(Some(audience)), question, "{audience}");
        }
        assert_eq!(
            publish_question(None),
            "Send to every confirmed subscriber?"
        );
        assert_eq!(thousands(-1_204), "-1,204");
        assert_eq!(thousands(i64::MIN), "-9,223,372,036,854,775,808");
    }

    #[test]
    fn rates_keep_a_decimal_only_while_small() {
        assert_eq!(rate_text(2.345), "2.3 emails a second");
        assert_eq!(rate_text(1234.4), "1234 emails a second");
    }

    #[test]
    fn an_address_that_is_not_an_issue_id_names_no_issue() {
        assert!(parse_issue_id("not-an-id").is_none());
        assert!(parse_issue_id("").is_none());
        let id = Uuid::new_v4();
        assert_eq!(parse_issue_id(&id.to_string()), Some(id));
    }
}
