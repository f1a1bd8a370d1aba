//! Newsletter issues: what an admin writes ([`Draft`]) and how it becomes an
//! email ([`render`]); a list's welcome email ([`Welcome`]) is written and
//! rendered the same way ([`welcome`]). Rendering happens once per issue
//! (and once per list and batch of welcomes); what differs per recipient
//! (their name, their unsubscribe link) is left as `{{key}}` placeholders
//! that the outbox fills when each email is sent, so an issue is stored
//! once however many people receive it.

mod draft;
mod render;
mod welcome;

pub use draft::{Draft, DraftError, DraftField};
pub use render::{
    PREFERENCES_URL, RECIPIENT_NAME, UNSUBSCRIBE_URL, WEB_VERSION, WebVersion, render, summary,
    welcome,
};
pub use welcome::{Welcome, WelcomeError};
