//! The newsroom: signing in and out, and the pages behind `/admin`.
//!
//! Every route under `/admin` is registered inside one scope wrapped by
//! [`guard::require_admin`], so none can be reached without a signed-in
//! session (`routes::endpoints` is the list, and a test walks it). Sessions
//! live in Redis ([`crate::admin::sessions`]); accounts, their second factor
//! and the audit log in Postgres ([`crate::admin`]).
//!
//! Every page here is sent with `Cache-Control: no-store`, and every form
//! that changes something carries the session's CSRF token
//! ([`guard::Protected`]), on top of the `SameSite=Strict` cookie.

pub(crate) mod account;
mod actor;
mod cookies;
pub(crate) mod dashboard;
mod guard;
pub(crate) mod inbox;
mod layout;
pub(crate) mod login;
mod login_form;
pub(crate) mod newsletters;
mod pages;
mod session_check;
pub(crate) mod subscribers;

pub use account::{change_email, change_password, enrol_totp, password_page, totp_page};
pub use cookies::SessionCookies;
pub use dashboard::dashboard;
pub use guard::require_admin;
pub use inbox::{inbox, inbox_email, inbox_email_body};
pub use login::{code_page, log_in, log_out, login_page, submit_code};
pub use newsletters::{
    PublishSettings, act_on_issue, compose_form_config, compose_page, issue_events, issue_page,
    issue_script, newsletters, submit_issue,
};
pub use subscribers::{
    erase_subscriber, export_subscriber, export_subscribers, subscriber_page, subscribers,
};
