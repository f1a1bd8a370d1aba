//! A self-hostable newsletter subscription service: people subscribe through a
//! form, confirm through a link in an email, and the list lives in Postgres.

pub mod admin;
pub mod api;
pub mod archive;
pub mod campaigns;
pub mod configuration;
pub mod db;
pub mod delivery;
pub mod domain;
pub mod emails;
pub mod imports;
pub mod keys;
pub mod metrics;
pub mod migrate;
pub mod newsletters;
pub mod outbox;
pub mod outgoing_webhooks;
pub mod pages;
pub mod rate_limit;
pub mod readiness;
pub mod retention;
pub mod routes;
pub mod signups;
pub mod startup;
pub mod subscribers;
pub mod telemetry;
pub mod web;
pub mod webhooks;
