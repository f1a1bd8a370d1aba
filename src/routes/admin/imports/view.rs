//! An import as people read it, in one shape for its page and for its
//! live updates, so that both say the same in the same words.

use serde::Serialize;
use uuid::Uuid;

use crate::imports::ImportRecord;

/// Where an import stands, with its figures ready to show.
#[derive(Debug, Clone, Serialize)]
pub struct ImportView {
    /// `reading`, `merging`, `done`, `failed`, or `interrupted`: left
    /// reading or merging with no process running it.
    pub state: &'static str,
    pub rows_read: i64,
    pub rows_staged: i64,
    pub subscribers_added: i64,
    pub memberships_added: i64,
    pub already_on_list: i64,
    pub confirmations_queued: i64,
    pub welcomes_queued: i64,
    pub refused: i64,
    /// Why it failed, when it did.
    pub failure: Option<String>,
    /// Nothing will change any more unless the file is uploaded again.
    pub finished: bool,
}

impl ImportView {
    /// `running`: whether a process holds the import's lock now.
    pub fn new(record: &ImportRecord, running: bool) -> Self {
        let state = record.state_seen(running);
        Self {
            state,
            rows_read: record.rows_read,
            rows_staged: record.rows_staged,
            subscribers_added: record.subscribers_added,
            memberships_added: record.memberships_added,
            already_on_list: record.already_on_list,
            confirmations_queued: record.confirmations_queued,
            welcomes_queued: record.welcomes_queued,
            refused: record.refused,
            failure: record.failure.clone().filter(|_| state == "failed"),
            finished: !matches!(state, "reading" | "merging"),
        }
    }
}

/// Where an import's page is.
pub fn import_path(id: Uuid) -> String {
    format!("/admin/imports/{id}")
}

/// An import id from an address. Anything that is not one names no
/// import: the caller answers 404, as for an id that matches nothing.
pub fn parse_import_id(raw: &str) -> Option<Uuid> {
    Uuid::try_parse(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: &str) -> ImportRecord {
        ImportRecord {
            id: Uuid::new_v4(),
            list_id: Uuid::new_v4(),
            list_name: "newsletter".into(),
            file_name: "readers.csv".into(),
            consent_source: None,
            welcome: false,
            state: state.into(),
            failure: Some("The database went away.".into()),
            rows_read: 3,
            rows_staged: 2,
            subscribers_added: 0,
            memberships_added: 0,
            already_on_list: 0,
            confirmations_queued: 0,
            welcomes_queued: 0,
            refused: 1,
            started_by: "ada".into(),
            created_at: chrono::Utc::now(),
            finished_at: None,
        }
    }

    #[test]
    fn an_unfinished_import_nobody_runs_shows_as_interrupted() {
        for (state, running, shown, finished) in [
            ("reading", true, "reading", false),
            ("merging", true, "merging", false),
            ("reading", false, "interrupted", true),
            ("merging", false, "interrupted", true),
            ("done", false, "done", true),
            ("failed", false, "failed", true),
        ] {
            let view = ImportView::new(&record(state), running);
            assert_eq!(view.state, shown, "{state}, running: {running}");
            assert_eq!(view.finished, finished, "{state}, running: {running}");
            assert_eq!(view.failure.is_some(), shown == "failed", "{state}");
        }
    }
}
