//! Black-box tests: each starts the application on a random port against its
//! own freshly created database and a mock email API.

mod admin;
mod admin_accounts;
mod admin_sessions;
mod admin_sign_in;
mod admin_totp;
mod campaigns;
mod delivery;
mod deploy_spec;
mod erasure;
mod failover;
mod health_check;
mod helpers;
mod inbox;
mod logs;
mod metrics;
mod migrations;
mod newsletters;
mod newsroom;
mod openapi;
mod pages;
mod production_settings;
mod rate_limits;
mod readme;
mod retention;
mod shutdown;
mod signups;
mod smtp;
mod smtp_server;
mod subscriber_directory;
mod subscriber_records;
mod subscriptions;
mod subscriptions_confirm;
mod unsubscribe;
mod webhooks;
