//! The newsroom's pages behind `/admin`: the dashboard, the subscribers
//! and their custom attributes, the lists, the segments, the issues, the
//! imports, the API tokens and the local inbox; and the live updates the
//! long-running ones follow ([`live`]). Signing in and out and the admin's own
//! account are with the accounts, in [`crate::admin::pages`].
//!
//! Every route under `/admin` is registered inside one scope wrapped by
//! [`crate::admin::guard::require_admin`], so none can be reached without a
//! signed-in session (`routes::endpoints` is the list, and a test walks it).
//! Sessions live in Redis ([`crate::admin::sessions`]); accounts, their
//! second factor and the audit log in Postgres ([`crate::admin`]).
//!
//! Every page here is sent with `Cache-Control: no-store`, and every form
//! that changes something carries the session's CSRF token
//! ([`crate::admin::guard::Protected`]), on top of the `SameSite=Strict`
//! cookie.

pub(crate) mod attributes;
pub(crate) mod dashboard;
pub(crate) mod email;
pub(crate) mod imports;
pub(crate) mod inbox;
pub(crate) mod lists;
pub(crate) mod live;
pub(crate) mod newsletters;
mod pages;
pub(crate) mod segments;
pub(crate) mod subscribers;
pub(crate) mod tokens;
pub(crate) mod webhooks;

pub use attributes::{attributes_page, create_attribute, delete_attribute};
pub use dashboard::dashboard;
pub use email::change_email;
pub use imports::{
    ImportUploads, import_events, import_page, import_refusals, import_script, imports, upload,
};
pub use inbox::{inbox, inbox_email, inbox_email_body};
pub use lists::{
    archive_list, create_list, list_form_config, list_page, lists, unarchive_list, update_list,
    update_welcome, welcome_form_config,
};
pub use newsletters::{
    PublishSettings, act_on_issue, compose_form_config, compose_page, delete_draft, draft_page,
    issue_events, issue_page, issue_script, newsletters, submit_draft, submit_issue,
};
pub use segments::{
    create_segment, delete_segment, segment_form_config, segment_page, segments, update_segment,
};
pub use subscribers::{
    attributes_form_config, change_attributes, erase_subscriber, export_subscriber,
    export_subscribers, subscriber_page, subscribers,
};
pub use tokens::{create_token, revoke_token, tokens_page};
pub use webhooks::{
    create_webhook, delete_webhook, disable_webhook, enable_webhook, retry_webhook_delivery,
    update_webhook, webhook_page, webhooks_page,
};
