//! Postmark's webhook records, parsed into what the service acts on.
//!
//! Postmark posts one JSON object per event, its kind in `RecordType`. The
//! fields read here, per kind (Postmark's names):
//! - `Bounce` and `SpamComplaint`: `ID` (a number, unique per record),
//!   `Type` and `TypeCode`, `Email`, `BouncedAt`, `Inactive` (Postmark
//!   itself stopped sending to the address), `Details`,
//!   `MessageID`, `Metadata`;
//! - `SubscriptionChange`: `Recipient`, `ChangedAt`, `SuppressSending`
//!   (true: the address was suppressed; false: reactivated),
//!   `SuppressionReason` (`HardBounce`, `SpamComplaint` or
//!   `ManualSuppression` today; null on a reactivation; a reason added
//!   later suppresses all the same, logged), `Origin` (`Recipient`,
//!   `Customer`, `Admin`), `MessageID` (null for manual changes);
//! - `Delivery`: `Recipient`, `DeliveredAt`, `MessageID`, `Metadata`.
//!
//! `Metadata.delivery_id` is what the campaign sender attached to a
//! newsletter email ([`DeliveryId`]), and names the delivery a record is
//! about. Records without an `ID` get one derived from their content, so
//! that the same record posted twice is recognised as such.
//!
//! What is kept of a record's text is what a closed set allows: a bounce's
//! `Type` and a change's `Origin` when they are names Postmark documents,
//! and from a bounce's `Details` only the SMTP codes. The receiving server's
//! words (`Details`, `Description`) often quote the recipient's address,
//! and a suppression outlives the subscriber it was about.
//!
//! Everything else is ignored, and unknown fields are allowed: Postmark adds
//! some now and then. An unknown `RecordType` is refused, so that a webhook
//! configured for more events than this service handles shows up as errors
//! in Postmark's log instead of being silently swallowed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::campaigns::DeliveryId;
use crate::domain::{SubscriberEmail, UnwantedCharacter};
use crate::subscribers::suppression::Reason;

/// One record, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Postmark's `ID`, or one derived from the content when it has none.
    pub id: String,
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Bounce(Bounce),
    SpamComplaint(Complaint),
    SubscriptionChange(SubscriptionChange),
    Delivery(Delivered),
}

impl Event {
    /// The `RecordType` it came as: what `webhook_records.record_type` keeps.
    pub fn record_type(&self) -> &'static str {
        match self {
            Event::Bounce(_) => "Bounce",
            Event::SpamComplaint(_) => "SpamComplaint",
            Event::SubscriptionChange(_) => "SubscriptionChange",
            Event::Delivery(_) => "Delivery",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bounce {
    pub kind: BounceKind,
    /// Postmark's `Type`, if it is one Postmark documents.
    pub type_name: &'static str,
    pub address: SubscriberEmail,
    pub bounced_at: DateTime<Utc>,
    /// The codes the receiving server answered with (`SMTP 550 5.1.1`), for
    /// the admin pages.
    pub detail: Option<String>,
    pub delivery: Option<DeliveryId>,
}

/// What a bounce means for the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BounceKind {
    /// The address will never take mail: suppress it, and the delivery
    /// counts as bounced.
    Hard,
    /// The recipient asked to be taken off by replying "unsubscribe":
    /// suppress the address, whether Postmark deactivated it or not.
    Unsubscribe,
    /// May pass: counts towards `webhooks.soft_bounce_limit`.
    Soft,
    /// Says nothing about the address (an auto-reply, a challenge, an
    /// error of the API's own): recorded, nothing more.
    Other,
}

impl BounceKind {
    /// Classifies a bounce by Postmark's `Type` and `Inactive`.
    ///
    /// `Inactive` wins over the type: it means Postmark itself deactivated
    /// the address and will refuse to send to it until it is reactivated
    /// (which arrives as a `SubscriptionChange` that lifts the suppression).
    /// Mirroring that here keeps campaigns from trying, and from recording
    /// a refusal per issue for it. A type this list does not know yet has
    /// no effect unless the address was deactivated.
    /// An `Unsubscribe` is the recipient's wish to leave, which this
    /// service honours even when Postmark keeps the address active.
    pub fn classify(type_name: &str, inactive: bool) -> Self {
        match type_name {
            "Unsubscribe" => BounceKind::Unsubscribe,
            _ if inactive => BounceKind::Hard,
            "HardBounce" | "BadEmailAddress" | "ManuallyDeactivated" => BounceKind::Hard,
            "SoftBounce" | "Transient" | "DnsError" | "Blocked" | "SpamNotification"
            | "VirusNotification" | "DMARCPolicy" => BounceKind::Soft,
            _ => BounceKind::Other,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Complaint {
    pub address: SubscriberEmail,
    pub complained_at: DateTime<Utc>,
    pub delivery: Option<DeliveryId>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionChange {
    pub address: SubscriberEmail,
    pub changed_at: DateTime<Utc>,
    /// `Some` when Postmark suppressed the address, with why; `None` when
    /// it reactivated it.
    pub suppressed: Option<Reason>,
    /// Who made the change at Postmark (`Recipient`, `Customer`, `Admin`).
    pub origin: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub address: SubscriberEmail,
    pub delivered_at: DateTime<Utc>,
}

/// Why a body is not a record this service takes: said back to the caller
/// with a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRecord(String);

/// The fields of every record kind, all optional: which are required
/// depends on `RecordType`, and is checked by hand so that the reason can
/// name the field.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Raw {
    record_type: Option<String>,
    #[serde(rename = "ID")]
    id: Option<i64>,
    #[serde(rename = "Type")]
    type_name: Option<String>,
    email: Option<String>,
    recipient: Option<String>,
    bounced_at: Option<String>,
    changed_at: Option<String>,
    delivered_at: Option<String>,
    #[serde(default)]
    inactive: bool,
    details: Option<String>,
    #[serde(rename = "MessageID")]
    message_id: Option<String>,
    suppress_sending: Option<bool>,
    suppression_reason: Option<String>,
    origin: Option<String>,
    metadata: Option<HashMap<String, serde_json::Value>>,
}

/// Parses one webhook body.
pub fn parse(body: &[u8]) -> Result<Record, BadRecord> {
    let raw: Raw = serde_json::from_slice(body)
        .map_err(|e| BadRecord(format!("The body is not a Postmark webhook record: {e}.")))?;
    let record_type = raw
        .record_type
        .as_deref()
        .ok_or_else(|| BadRecord("The record has no RecordType.".into()))?;
    match record_type {
        "Bounce" => raw.bounce(),
        "SpamComplaint" => raw.complaint(),
        "SubscriptionChange" => raw.subscription_change(),
        "Delivery" => raw.delivery(),
        other => Err(BadRecord(format!(
            "RecordType `{}` is not one this service takes: it takes Bounce, SpamComplaint, \
             SubscriptionChange and Delivery.",
            other.escape_debug()
        ))),
    }
}

impl Raw {
    fn bounce(self) -> Result<Record, BadRecord> {
        let id = required(self.id, "ID")?;
        let type_name = required(self.type_name.as_deref(), "Type")?;
        Ok(Record {
            id: id.to_string(),
            event: Event::Bounce(Bounce {
                kind: BounceKind::classify(type_name, self.inactive),
                type_name: known(BOUNCE_TYPES, type_name).unwrap_or("an unknown bounce type"),
                address: address(self.email.as_deref(), "Email")?,
                bounced_at: moment(self.bounced_at.as_deref(), "BouncedAt")?,
                detail: self.details.as_deref().and_then(smtp_codes),
                delivery: delivery_id(self.metadata.as_ref()),
            }),
        })
    }

    fn complaint(self) -> Result<Record, BadRecord> {
        let id = required(self.id, "ID")?;
        Ok(Record {
            id: id.to_string(),
            event: Event::SpamComplaint(Complaint {
                address: address(self.email.as_deref(), "Email")?,
                complained_at: moment(self.bounced_at.as_deref(), "BouncedAt")?,
                delivery: delivery_id(self.metadata.as_ref()),
            }),
        })
    }

    fn subscription_change(self) -> Result<Record, BadRecord> {
        let suppress = required(self.suppress_sending, "SuppressSending")?;
        let address = address(self.recipient.as_deref(), "Recipient")?;
        let changed_at = moment(self.changed_at.as_deref(), "ChangedAt")?;
        let suppressed = match (suppress, self.suppression_reason.as_deref()) {
            (false, _) => None,
            (true, Some("HardBounce")) => Some(Reason::HardBounce),
            (true, Some("SpamComplaint")) => Some(Reason::SpamComplaint),
            // An unsubscribe through Postmark's link or header, or a
            // suppression made in its dashboard: this service did not ask.
            (true, Some("ManualSuppression")) => Some(Reason::ProviderUnsubscribe),
            // Postmark stopped sending to the address whatever the reason:
            // refusing the record would leave it unsuppressed here for good,
            // and every campaign would try it again. The closest reason of
            // ours is kept, and the new one logged for someone to map.
            (true, other) => {
                tracing::warn!(
                    suppression_reason = %other.unwrap_or("(none)").escape_debug(),
                    "Postmark suppressed an address for a reason this service does not know; \
                     suppressed here as unsubscribed at the provider"
                );
                Some(Reason::ProviderUnsubscribe)
            }
        };
        // The id is made of the origin as it came, as it always was: the
        // same record gets the same id from every release.
        let origin = self.origin.as_deref().map(clean);
        let id = derived_id(&[
            "SubscriptionChange",
            self.message_id.as_deref().unwrap_or(""),
            &address.as_ref().to_lowercase(),
            &changed_at.to_rfc3339(),
            if suppress { "suppress" } else { "reactivate" },
            self.suppression_reason.as_deref().unwrap_or(""),
            origin.as_deref().unwrap_or(""),
        ]);
        Ok(Record {
            id,
            event: Event::SubscriptionChange(SubscriptionChange {
                address,
                changed_at,
                suppressed,
                origin: self
                    .origin
                    .as_deref()
                    .map(|origin| known(ORIGINS, origin).unwrap_or("unknown")),
            }),
        })
    }

    fn delivery(self) -> Result<Record, BadRecord> {
        let address = address(self.recipient.as_deref(), "Recipient")?;
        let delivered_at = moment(self.delivered_at.as_deref(), "DeliveredAt")?;
        let id = derived_id(&[
            "Delivery",
            self.message_id.as_deref().unwrap_or(""),
            &address.as_ref().to_lowercase(),
            &delivered_at.to_rfc3339(),
        ]);
        Ok(Record {
            id,
            event: Event::Delivery(Delivered {
                address,
                delivered_at,
            }),
        })
    }
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, BadRecord> {
    value.ok_or_else(|| BadRecord(format!("The record has no {field}.")))
}

fn address(raw: Option<&str>, field: &str) -> Result<SubscriberEmail, BadRecord> {
    SubscriberEmail::parse(required(raw, field)?).map_err(|e| {
        BadRecord(format!(
            "{field} is not an address this service sends to: {e}"
        ))
    })
}

/// A moment as Postmark writes it: ISO 8601 with an offset, with up to
/// seven decimals (`2014-08-01T13:28:10.2735393-04:00`).
fn moment(raw: Option<&str>, field: &str) -> Result<DateTime<Utc>, BadRecord> {
    let raw = required(raw, field)?;
    DateTime::parse_from_rfc3339(raw)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| {
            BadRecord(format!(
                "{field} `{}` is not a date and time with an offset: {e}.",
                raw.escape_debug()
            ))
        })
}

/// The delivery `Metadata.delivery_id` names. One that does not parse is
/// not the caller's mistake to fix (a message sent by another system on the
/// same Postmark server, say): it is logged and the record still counts for
/// its address.
fn delivery_id(metadata: Option<&HashMap<String, serde_json::Value>>) -> Option<DeliveryId> {
    let raw = metadata?.get("delivery_id")?;
    let parsed = raw.as_str().map(str::parse::<DeliveryId>);
    match parsed {
        Some(Ok(id)) => Some(id),
        _ => {
            tracing::warn!(
                delivery_id = %raw.to_string().escape_debug(),
                "A webhook record names a delivery that is not one of ours; only its address is acted on"
            );
            None
        }
    }
}

/// Postmark's bounce types
/// (<https://postmarkapp.com/developer/api/bounce-api#bounce-types>).
const BOUNCE_TYPES: &[&str] = &[
    "HardBounce",
    "Transient",
    "Unsubscribe",
    "Subscribe",
    "AutoResponder",
    "AddressChange",
    "DnsError",
    "SpamNotification",
    "OpenRelayTest",
    "Unknown",
    "SoftBounce",
    "VirusNotification",
    "ChallengeVerification",
    "BadEmailAddress",
    "SpamComplaint",
    "ManuallyDeactivated",
    "Unconfirmed",
    "Blocked",
    "SMTPApiError",
    "InboundError",
    "DMARCPolicy",
    "TemplateRenderingFailed",
];

/// Who can change an address's state at Postmark.
const ORIGINS: &[&str] = &["Recipient", "Customer", "Admin"];

/// `name` as the list spells it, if the list has it.
fn known(list: &[&'static str], name: &str) -> Option<&'static str> {
    list.iter().copied().find(|known| *known == name)
}

/// The SMTP reply code and enhanced status code a bounce's `Details` give
/// (`smtp;550 5.1.1 <ada@example.com>: unknown user` gives `SMTP 550
/// 5.1.1`), and nothing of the text around them.
fn smtp_codes(details: &str) -> Option<String> {
    let mut words = details
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|word| !word.is_empty());
    let reply = words.find(|word| {
        word.len() == 3
            && word.bytes().all(|b| b.is_ascii_digit())
            && matches!(&word[..1], "4" | "5")
    })?;
    let enhanced = words.next().filter(|word| {
        let parts: Vec<&str> = word.split('.').collect();
        parts.len() == 3
            && matches!(parts[0], "4" | "5")
            && parts.iter().all(|part| {
                (1..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit())
            })
    });
    Some(match enhanced {
        Some(enhanced) => format!("SMTP {reply} {enhanced}"),
        None => format!("SMTP {reply}"),
    })
}

/// Text from the provider with the characters no stored field should carry
/// (NUL above all, which Postgres refuses) replaced, and cut to a length
/// fit for a page.
fn clean(text: &str) -> String {
    const MOST: usize = 500;
    let cleaned: String = text
        .chars()
        .map(|c| {
            if UnwantedCharacter::find_in(c.encode_utf8(&mut [0; 4])).is_some() {
                ' '
            } else {
                c
            }
        })
        .take(MOST)
        .collect();
    cleaned.trim().to_owned()
}

/// An id for a record that has none, from the fields that make it this
/// record: the same record posted again gets the same id, and two records
/// that differ in any of them get different ones.
fn derived_id(parts: &[&str]) -> String {
    let mut digest = Sha256::new();
    for part in parts {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    format!("{}:{}", parts[0], hex::encode(digest.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    fn parse_json(value: serde_json::Value) -> Result<Record, BadRecord> {
        parse(value.to_string().as_bytes())
    }

    fn bounce(type_name: &str, inactive: bool) -> serde_json::Value {
        json!({
            "RecordType": "Bounce",
            "ID": 4323372036854775807_i64,
            "Type": type_name,
            "TypeCode": 1,
            "Name": "Hard bounce",
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "Description": "The server was unable to deliver your message.",
            "Details": "smtp;550 5.1.1 unknown user",
            "Email": "Ada@Example.com",
            "BouncedAt": "2014-08-01T13:28:10.2735393-04:00",
            "DumpAvailable": true,
            "Inactive": inactive,
            "CanActivate": true,
            "Subject": "Test subject",
            "ServerID": 23,
            "MessageStream": "broadcast",
            "Metadata": {"delivery_id": format!("{}:7", Uuid::nil())}
        })
    }

    #[test]
    fn a_bounce_is_read_with_its_address_moment_detail_and_delivery() {
        let record = parse_json(bounce("HardBounce", true)).unwrap();
        assert_eq!(record.id, "4323372036854775807");
        let Event::Bounce(bounce) = record.event else {
            panic!("not a bounce: {record:?}");
        };
        assert_eq!(bounce.kind, BounceKind::Hard);
        assert_eq!(bounce.address.as_ref(), "Ada@Example.com");
        assert_eq!(
            bounce.bounced_at,
            "2014-08-01T17:28:10.2735393Z"
                .parse::<DateTime<Utc>>()
                .unwrap()
        );
        assert_eq!(bounce.detail.as_deref(), Some("SMTP 550 5.1.1"));
        assert_eq!(
            bounce.delivery,
            Some(DeliveryId {
                issue_id: Uuid::nil(),
                seq: 7
            })
        );
    }

    #[test]
    fn bounces_are_classified_by_type_and_by_whether_postmark_deactivated_the_address() {
        for (type_name, inactive, kind) in [
            ("HardBounce", false, BounceKind::Hard),
            ("BadEmailAddress", false, BounceKind::Hard),
            ("ManuallyDeactivated", false, BounceKind::Hard),
            ("SoftBounce", false, BounceKind::Soft),
            ("Transient", false, BounceKind::Soft),
            ("DnsError", false, BounceKind::Soft),
            ("Blocked", false, BounceKind::Soft),
            ("SoftBounce", true, BounceKind::Hard),
            ("Unsubscribe", true, BounceKind::Unsubscribe),
            ("Unsubscribe", false, BounceKind::Unsubscribe),
            ("AutoResponder", false, BounceKind::Other),
            ("AddressChange", false, BounceKind::Other),
            ("Subscribe", false, BounceKind::Other),
            ("ChallengeVerification", false, BounceKind::Other),
            ("SomethingPostmarkAddsNextYear", false, BounceKind::Other),
            ("SomethingPostmarkAddsNextYear", true, BounceKind::Hard),
        ] {
            assert_eq!(
                BounceKind::classify(type_name, inactive),
                kind,
                "{type_name}, inactive: {inactive}"
            );
        }
    }

    #[test]
    fn a_metadata_delivery_id_that_is_not_ours_is_ignored_not_refused() {
        for metadata in [
            json!({"delivery_id": "not-an-id"}),
            json!({"delivery_id": 42}),
            json!({"user_id": 43}),
            json!({}),
        ] {
            let mut value = bounce("HardBounce", true);
            value["Metadata"] = metadata.clone();
            let Event::Bounce(bounce) = parse_json(value).unwrap().event else {
                panic!("not a bounce");
            };
            assert_eq!(bounce.delivery, None, "{metadata}");
        }
    }

    #[test]
    fn a_spam_complaint_is_read() {
        let mut value = bounce("SpamComplaint", true);
        value["RecordType"] = json!("SpamComplaint");
        value["ID"] = json!(42);
        let record = parse_json(value).unwrap();
        assert_eq!(record.id, "42");
        assert!(
            matches!(record.event, Event::SpamComplaint(_)),
            "{record:?}"
        );
    }

    fn subscription_change(suppress: bool, reason: Option<&str>) -> serde_json::Value {
        json!({
            "RecordType": "SubscriptionChange",
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "ServerID": 123456,
            "MessageStream": "broadcast",
            "ChangedAt": "2020-02-01T10:53:34.416071Z",
            "Recipient": "bounced-address@example.com",
            "Origin": "Recipient",
            "SuppressSending": suppress,
            "SuppressionReason": reason,
            "Tag": null,
            "Metadata": {}
        })
    }

    #[test]
    fn a_subscription_change_maps_postmarks_reasons_onto_ours() {
        for (suppress, reason, expected) in [
            (true, Some("HardBounce"), Some(Reason::HardBounce)),
            (true, Some("SpamComplaint"), Some(Reason::SpamComplaint)),
            (
                true,
                Some("ManualSuppression"),
                Some(Reason::ProviderUnsubscribe),
            ),
            (false, None, None),
        ] {
            let record = parse_json(subscription_change(suppress, reason)).unwrap();
            let Event::SubscriptionChange(change) = record.event else {
                panic!("not a subscription change");
            };
            assert_eq!(change.suppressed, expected, "{reason:?}");
            assert_eq!(change.origin, Some("Recipient"));
        }
    }

    #[test]
    fn a_suppression_for_a_reason_postmark_adds_later_still_suppresses() {
        for reason in [Some("SomethingPostmarkAddsNextYear"), None] {
            let record = parse_json(subscription_change(true, reason))
                .unwrap_or_else(|e| panic!("{reason:?} refused: {e}"));
            let Event::SubscriptionChange(change) = record.event else {
                panic!("not a subscription change");
            };
            assert_eq!(
                change.suppressed,
                Some(Reason::ProviderUnsubscribe),
                "{reason:?}"
            );
        }
    }

    #[test]
    fn an_unsubscribe_reply_suppresses_even_while_postmark_keeps_the_address_active() {
        let record = parse_json(bounce("Unsubscribe", false)).unwrap();
        let Event::Bounce(bounce) = record.event else {
            panic!("not a bounce: {record:?}");
        };
        assert_eq!(bounce.kind, BounceKind::Unsubscribe);
    }

    #[test]
    fn records_without_an_id_get_the_same_one_each_time_and_differ_by_content() {
        let suppress = parse_json(subscription_change(true, Some("HardBounce"))).unwrap();
        let again = parse_json(subscription_change(true, Some("HardBounce"))).unwrap();
        let reactivate = parse_json(subscription_change(false, None)).unwrap();
        let mut later = subscription_change(true, Some("HardBounce"));
        later["ChangedAt"] = json!("2020-02-01T10:53:35Z");
        let later = parse_json(later).unwrap();
        assert_eq!(suppress.id, again.id);
        assert_ne!(suppress.id, reactivate.id);
        assert_ne!(suppress.id, later.id);
        assert!(suppress.id.starts_with("SubscriptionChange:"));
    }

    #[test]
    fn a_delivery_is_read() {
        let record = parse_json(json!({
            "RecordType": "Delivery",
            "ServerID": 23,
            "MessageStream": "broadcast",
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "Recipient": "john@example.com",
            "Tag": "welcome-email",
            "DeliveredAt": "2019-11-05T16:33:54.9070259Z",
            "Details": "Test delivery webhook details",
            "Metadata": {}
        }))
        .unwrap();
        assert!(record.id.starts_with("Delivery:"));
        assert!(matches!(record.event, Event::Delivery(_)));
    }

    #[test]
    fn malformed_bodies_and_unknown_record_types_are_refused_with_a_reason() {
        for (body, says) in [
            ("not json".to_owned(), "not a Postmark webhook record"),
            ("[]".to_owned(), "not a Postmark webhook record"),
            (json!({"ID": 1}).to_string(), "no RecordType"),
            (
                json!({"RecordType": "Open", "Recipient": "a@example.com"}).to_string(),
                "`Open` is not one this service takes",
            ),
            (
                {
                    let mut v = bounce("HardBounce", true);
                    v.as_object_mut().unwrap().remove("ID");
                    v.to_string()
                },
                "no ID",
            ),
            (
                {
                    let mut v = bounce("HardBounce", true);
                    v["BouncedAt"] = json!("yesterday");
                    v.to_string()
                },
                "BouncedAt",
            ),
            (
                {
                    let mut v = bounce("HardBounce", true);
                    v["Email"] = json!("ada\u{0}@example.com");
                    v.to_string()
                },
                "Email is not an address",
            ),
            (
                {
                    let mut v = bounce("HardBounce", true);
                    v["ID"] = json!("forty-two");
                    v.to_string()
                },
                "not a Postmark webhook record",
            ),
        ] {
            let error = parse(body.as_bytes()).unwrap_err();
            assert!(error.to_string().contains(says), "{body}: {error}");
        }
    }

    #[test]
    fn provider_text_loses_control_characters_and_is_cut_short() {
        assert_eq!(clean("a\u{0}b\r\nc\u{202E}d"), "a b  c d");
    }

    #[test]
    fn of_a_bounces_details_only_the_smtp_codes_are_kept() {
        for (details, kept) in [
            (
                "smtp;550 5.1.1 <ada@example.com>: unknown user",
                Some("SMTP 550 5.1.1"),
            ),
            ("smtp; 452 4.2.2 mailbox full", Some("SMTP 452 4.2.2")),
            (
                "smtp;554 Message refused for user42@example.com",
                Some("SMTP 554"),
            ),
            ("ada@example.com does not exist", None),
            ("user 12345 at host 1.2.3.4", None),
            ("", None),
        ] {
            assert_eq!(smtp_codes(details).as_deref(), kept, "{details}");
        }
    }

    #[test]
    fn a_bounce_of_a_type_postmark_does_not_document_keeps_none_of_its_text() {
        let record = parse_json(bounce("Bounced <ada@example.com>", true)).unwrap();
        let Event::Bounce(bounce) = record.event else {
            panic!("not a bounce: {record:?}");
        };
        assert_eq!(bounce.type_name, "an unknown bounce type");
        assert_eq!(clean(&"x".repeat(10_000)).len(), 500);
    }
}
