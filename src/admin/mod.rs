//! The newsroom's accounts and the pages that use them: who may sign in
//! (Postgres), their sessions (Redis) and, for the web, the cookies that
//! carry them, the [`guard`] in front of every `/admin` route and the
//! [`session_check`] of long answers; their optional second factor; the
//! audit log of what they did; and the sign-in and account pages
//! ([`pages`]). The rest of the newsroom (dashboard, subscribers, issues,
//! inbox) is in `crate::routes::admin`, which takes the guard and the
//! navigation from here.

pub mod accounts;
pub mod actor;
pub mod audit;
pub mod cli;
pub mod cookies;
pub mod guard;
pub mod pages;
pub mod password;
pub mod session_check;
pub mod sessions;
pub mod sign_in_failures;
pub mod sign_in_form;
pub mod totp;
pub mod totp_keys;
pub mod username;
