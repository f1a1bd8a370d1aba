//! The templates of the newsroom's list, issue and inbox pages
//! (`src/templates/admin/`). The sign-in and account pages have theirs
//! beside them, in [`crate::admin::pages::templates`], with the [`Nav`]
//! every newsroom page shows.

use askama::Template;

use crate::admin::audit::Entry;
use crate::admin::pages::templates::Nav;
use crate::admin::sign_in_failures::Recent;
use crate::domain::Newsletter;

/// One day of the dashboard chart.
pub struct Day {
    pub label: String,
    pub sign_ups: i64,
    pub confirmations: i64,
}

/// One bar of the chart, placed in SVG user units.
pub struct Bar {
    pub x: u32,
    pub y: u32,
    pub height: u32,
    pub title: String,
}

#[derive(Template)]
#[template(path = "admin/dashboard.html")]
pub struct DashboardPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub email: &'a str,
    pub totp_enabled: bool,
    pub unused_recovery_codes: i64,
    /// Each status, how a person reads it, and its count.
    pub by_status: Vec<(String, &'static str, i64)>,
    pub total: i64,
    pub sign_ups_30_days: i64,
    /// Of the people who signed up in the last 30 days, the share who
    /// confirmed, as a whole percentage; None without sign-ups.
    pub confirmation_rate: Option<i64>,
    pub chart: Chart,
    pub outbox_queued: i64,
    pub outbox_failed: i64,
    /// Outgoing webhook endpoints the service disabled because they kept
    /// failing: (id, URL, reason).
    pub disabled_webhooks: Vec<(uuid::Uuid, String, String)>,
    pub audit: Vec<Entry>,
    /// Failed sign-ins of the last day, per account.
    pub sign_in_failures: Vec<Recent>,
    pub email_error: Option<String>,
}

/// The sign-ups and confirmations chart, computed here so the template only
/// places rectangles.
pub struct Chart {
    pub days: Vec<Day>,
    pub sign_up_bars: Vec<Bar>,
    pub confirmation_bars: Vec<Bar>,
    pub peak: i64,
    pub width: u32,
    pub height: u32,
    /// Labels under the first, middle and last day.
    pub labels: Vec<String>,
}

impl Chart {
    /// Each day gets a slot with two bars, sign-ups and confirmations, scaled
    /// so the busiest day reaches the top.
    pub fn new(days: Vec<Day>) -> Self {
        const SLOT: u32 = 20;
        const BAR: u32 = 8;
        const PLOT_HEIGHT: u32 = 120;
        const TOP: u32 = 10;
        let peak = days
            .iter()
            .map(|d| d.sign_ups.max(d.confirmations))
            .max()
            .unwrap_or(0)
            .max(1);
        let bar = |slot: usize, offset: u32, value: i64, what: &str, label: &str| {
            let height = ((value as f64 / peak as f64) * f64::from(PLOT_HEIGHT)).round() as u32;
            Bar {
                x: slot as u32 * SLOT + offset,
                y: TOP + PLOT_HEIGHT - height,
                height,
                title: format!("{label}: {value} {what}"),
            }
        };
        let sign_up_bars = days
            .iter()
            .enumerate()
            .map(|(i, d)| bar(i, 2, d.sign_ups, "sign-ups", &d.label))
            .collect();
        let confirmation_bars = days
            .iter()
            .enumerate()
            .map(|(i, d)| bar(i, 2 + BAR, d.confirmations, "confirmations", &d.label))
            .collect();
        let labels = [0, days.len() / 2, days.len().saturating_sub(1)]
            .into_iter()
            .filter_map(|i| Some(days.get(i)?.label.clone()))
            .collect();
        Self {
            width: days.len().max(1) as u32 * SLOT,
            height: TOP + PLOT_HEIGHT + 20,
            days,
            sign_up_bars,
            confirmation_bars,
            peak,
            labels,
        }
    }

    /// Where the bars stand: below it, nothing is drawn.
    pub fn baseline(&self) -> u32 {
        self.height - 20
    }
}

/// One row of the subscriber list.
pub struct SubscriberRow {
    /// The subscriber's own page.
    pub path: String,
    pub email: String,
    pub name: String,
    pub status: &'static str,
    pub subscribed_at: String,
    pub confirmed_at: String,
}

/// A list the subscriber list can be narrowed to.
pub struct ListOption {
    pub id: String,
    pub name: String,
    pub archived: bool,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "admin/subscribers.html")]
pub struct SubscribersPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub query: &'a str,
    pub status: &'a str,
    /// Every list; with one selected, the status is the one on it.
    pub lists: Vec<ListOption>,
    pub rows: Vec<SubscriberRow>,
    /// The address of the next page, when there is one.
    pub next_page: Option<String>,
    /// The export of what is shown (every page of it).
    pub export: String,
    /// What the admin was sent here after (a subscriber erased).
    pub notice: Option<&'static str>,
}

impl SubscribersPage<'_> {
    /// Whether the list is narrowed to one of the lists.
    pub fn list_chosen(&self) -> bool {
        self.lists.iter().any(|list| list.selected)
    }
}

/// A subscriber's status and consent, as their page shows them.
pub struct SubscriberView {
    pub email: String,
    pub name: String,
    pub status: String,
    pub status_label: &'static str,
    /// Times in UTC, or empty when it did not happen (yet).
    pub subscribed_at: String,
    pub confirmed_at: String,
    pub unsubscribed_at: String,
}

/// The subscriber's entry on the suppression list.
pub struct SuppressionView {
    pub reason: &'static str,
    pub detail: String,
    pub changed_at: String,
}

/// A list the subscriber is or was on, with their status there.
pub struct MembershipView {
    /// The list's page.
    pub path: String,
    pub name: String,
    pub status: String,
    pub status_label: &'static str,
    /// Times in UTC, or empty when it did not happen (yet).
    pub joined_at: String,
    pub confirmed_at: String,
    pub unsubscribed_at: String,
}

/// A membership's status as the pages show it.
pub fn membership_label(status: &str) -> &'static str {
    match status {
        "pending" => "Waiting for confirmation",
        other => status_label(other),
    }
}

/// One issue sent (or being sent) to the subscriber.
pub struct DeliveryRow {
    /// The page.
    pub path: String,
    pub title: String,
    pub status: String,
    pub attempts: i16,
    pub last_error: String,
    pub updated_at: String,
}

#[derive(Template)]
#[template(path = "admin/subscriber.html")]
pub struct SubscriberPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    /// This page's address; the export and erase forms are under it.
    pub path: String,
    pub subscriber: SubscriberView,
    pub suppression: Option<SuppressionView>,
    /// The lists they are or were on, by name.
    pub lists: Vec<MembershipView>,
    pub deliveries: Vec<DeliveryRow>,
    /// Deliveries not shown, older than those that are.
    pub more_deliveries: i64,
    /// Why the last erase was refused.
    pub error: Option<String>,
    /// The custom attributes' form, one field per definition, and why it
    /// was refused beyond its fields.
    pub attributes: Vec<AttributeField>,
    pub attributes_error: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/subscriber_missing.html")]
pub struct SubscriberMissingPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    /// Whether the address held something that is not a subscriber id at
    /// all, rather than an id that matches nobody.
    pub malformed: bool,
}

/// A subscriber's status as the pages show it.
pub fn status_label(status: &str) -> &'static str {
    match status {
        "confirmed" => "Confirmed",
        "pending_confirmation" => "Waiting for confirmation",
        "unsubscribed" => "Unsubscribed",
        _ => "Other",
    }
}

/// One email of the local inbox's list.
pub struct InboxRow {
    /// The email's own page.
    pub path: String,
    pub to: String,
    pub subject: String,
    pub stream: String,
    pub received_at: String,
}

#[derive(Template)]
#[template(path = "admin/inbox.html")]
pub struct InboxPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub rows: Vec<InboxRow>,
    /// Emails older than those shown.
    pub more: i64,
}

#[derive(Template)]
#[template(path = "admin/inbox_email.html")]
pub struct InboxEmailPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    /// This page's address; the HTML body is under it.
    pub path: String,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub stream: String,
    pub received_at: String,
    /// The headers beyond From, To and Subject, in order.
    pub headers: Vec<(String, String)>,
    pub text_body: String,
}

#[derive(Template)]
#[template(path = "admin/inbox_missing.html")]
pub struct InboxMissingPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub heading: &'static str,
    pub reason: &'a str,
}

/// One definition of the attributes page.
pub struct DefinitionRow {
    pub name: String,
    /// As stored (`number`), and as a person reads it.
    pub kind: &'static str,
    pub kind_label: &'static str,
    pub created_at: String,
    /// Whether its delete form is open: it was just refused.
    pub open: bool,
}

#[derive(Template)]
#[template(path = "admin/attributes.html")]
pub struct AttributesPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub definitions: Vec<DefinitionRow>,
    /// The new attribute's form, as typed, and why it was refused.
    pub name: &'a str,
    pub name_error: Option<String>,
    /// Each kind: its value, its label, whether it is selected.
    pub kinds: Vec<(&'static str, &'static str, bool)>,
    pub kind_error: Option<String>,
    /// Why a delete was refused.
    pub delete_error: Option<String>,
    pub notice: Option<String>,
}

/// One attribute's field on a subscriber's page: its value as stored, or
/// as typed and refused, with the reason.
pub struct AttributeField {
    pub name: String,
    pub kind: &'static str,
    pub kind_label: &'static str,
    pub value: String,
    pub error: Option<String>,
}

/// One API token as the tokens page lists it.
pub struct TokenRow {
    pub id: uuid::Uuid,
    pub name: String,
    pub scopes: String,
    pub created: String,
    pub created_by: String,
    pub expires: String,
    pub last_used: String,
    pub revoked: String,
    pub revocable: bool,
}

/// A token just made, shown once.
pub struct CreatedToken<'a> {
    pub name: &'a str,
    pub secret: &'a str,
}

#[derive(Template)]
#[template(path = "admin/tokens.html")]
pub struct TokensPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub tokens: Vec<TokenRow>,
    pub created: Option<CreatedToken<'a>>,
    /// The new token's form, as typed, and why it was refused.
    pub name: &'a str,
    pub name_error: Option<String>,
    pub write: bool,
    pub publish: bool,
    pub expires_in_days: &'a str,
    pub expires_error: Option<String>,
    pub revoke_error: Option<String>,
    pub notice: Option<String>,
}

/// One outgoing webhook endpoint as its list shows it.
pub struct WebhookRow {
    pub id: uuid::Uuid,
    pub url: String,
    pub description: String,
    pub events: String,
    pub state: String,
    pub created: String,
}

/// One event the form offers, checked or not.
pub struct EventChoice {
    pub name: &'static str,
    pub label: &'static str,
    pub checked: bool,
}

/// An endpoint just registered, with its secret shown once.
pub struct CreatedWebhook<'a> {
    pub id: uuid::Uuid,
    pub url: &'a str,
    pub secret: &'a str,
}

#[derive(Template)]
#[template(path = "admin/webhooks.html")]
pub struct WebhooksPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub endpoints: Vec<WebhookRow>,
    pub created: Option<CreatedWebhook<'a>>,
    /// The form as typed, and why it was refused.
    pub url: &'a str,
    pub url_error: Option<String>,
    pub description: &'a str,
    pub description_error: Option<String>,
    pub events: Vec<EventChoice>,
    pub events_error: Option<String>,
}

/// One delivery as an endpoint's page lists it.
pub struct WebhookDeliveryRow {
    pub id: uuid::Uuid,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub created: String,
    pub attempts: i32,
    pub status: String,
    pub last_code: String,
    pub last_error: String,
    pub next_attempt: String,
}

#[derive(Template)]
#[template(path = "admin/webhook.html")]
pub struct WebhookPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub endpoint: WebhookRow,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<String>,
    pub deliveries: Vec<WebhookDeliveryRow>,
    pub notice: Option<&'static str>,
    /// The change form: as the endpoint is, or as typed and refused.
    pub description: &'a str,
    pub description_error: Option<String>,
    pub events: Vec<EventChoice>,
    pub events_error: Option<String>,
}
