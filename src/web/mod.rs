//! The kit every page and handler shares, whichever side it is on: the
//! error type and where failures become status codes ([`error`]), the
//! shapes of answer several pages give ([`answers`]), the client's address
//! behind our proxies ([`client`]), and the answers the OpenAPI document
//! names for many handlers at once ([`openapi_responses`]), and the cells of
//! the CSV files handed out ([`spreadsheet`]). It stands below
//! both the public routes and the newsroom's accounts, so that each can use
//! it without importing the other.

pub mod answers;
pub mod client;
pub mod error;
pub mod openapi_responses;
pub mod spreadsheet;
