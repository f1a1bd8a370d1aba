//! `/api/v1`: the JSON API programs use, next to the pages people use.
//! Its callers show an API token ([`tokens`]), never a session cookie; the
//! guard in front of every route ([`guard`]) finds the token, checks its
//! per-token budget and leaves an [`guard::ApiToken`] for handlers, which
//! check its scope. Handlers ([`lists`], [`subscribers`], [`issues`],
//! [`drafts`], [`imports`], [`webhooks`]) call the same
//! stores as the admin pages, and every refusal is an RFC 9457 problem
//! ([`problem`]), documented once for all of them ([`openapi`]).

mod body;
pub mod cli;
pub mod drafts;
pub mod guard;
pub mod imports;
pub mod issues;
pub mod lists;
pub(crate) mod openapi;
pub mod paging;
pub mod problem;
pub mod subscribers;
pub mod tokens;
pub mod webhooks;
