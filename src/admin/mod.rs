//! The newsroom's accounts: who may sign in (Postgres), their sessions
//! (Redis), their optional second factor, and the audit log of what they did.
//! The pages that use them are in `crate::routes::admin`.

pub mod accounts;
pub mod audit;
pub mod cli;
pub mod password;
pub mod sessions;
pub mod sign_in_failures;
pub mod sign_in_form;
pub mod totp;
pub mod totp_keys;
pub mod username;
