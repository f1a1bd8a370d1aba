//! Segments: saved, typed filters over the subscribers, and the audiences
//! they narrow. A filter is a tree of `all`/`any` groups over conditions
//! (on a list, signed up or confirmed before or after a day, a custom
//! attribute compared by its kind), kept as JSON in `segments.filter`:
//! - [`filter`]: the filter's JSON shape, and the checked [`Filter`] it
//!   becomes once read against the lists and attribute definitions of now;
//! - [`compile`]: a checked filter as an SQL predicate over
//!   `subscriptions s`, every value a bound parameter, and the audience
//!   predicate a campaign's recipients will be recorded with;
//! - [`frozen`]: a segment as an issue keeps it, read the same however
//!   late its audience is recorded;
//! - [`store`]: the `segments` table, the catalogue a filter is read
//!   against, and counting an audience within a second.

pub mod compile;
pub mod filter;
pub mod frozen;
pub mod store;

pub use compile::{Walk, push_audience, push_filter};
pub use filter::{Catalogue, Filter, FilterError, FilterSpec};
pub use frozen::Frozen;
pub use store::{Count, Segment, SegmentError, SegmentName, catalogue, count};
