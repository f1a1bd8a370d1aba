//! Who an issue may go to: the live lists, and the saved segments, one of
//! which may narrow them. Read and checked here for the compose page and
//! `/api/v1/issues` alike, so that both refuse the same choices with the
//! same reasons.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::subscribers::lists::{self, List};
use crate::subscribers::segments::store::Segment;
use crate::subscribers::segments::{self, Filter, Frozen};

/// Who an issue goes to, as its row records it.
pub struct Audience {
    /// `None`: every confirmed subscriber.
    pub list_ids: Option<Vec<Uuid>>,
    /// The segment that narrows the lists' readers, frozen as it is now.
    pub segment: Option<Frozen>,
}

/// A choice refused: the field (`lists` or `segment`) and why.
#[derive(Debug)]
pub struct Refused {
    pub field: &'static str,
    pub reason: String,
}

/// The live lists and the saved segments, with one segment checked.
pub struct Targets {
    /// Every list that is not archived.
    pub live: Vec<List>,
    pub saved: Vec<Segment>,
    /// The segment asked for, checked against the lists and attributes of
    /// now and frozen so; or why it cannot be used.
    pub segment: Result<Option<(Filter, Frozen)>, String>,
}

impl Targets {
    /// The live lists and saved segments, with `segment` checked.
    pub async fn read(
        connection: &mut PgConnection,
        segment: Option<Uuid>,
    ) -> Result<Self, sqlx::Error> {
        let all = lists::all(connection).await?;
        let saved = segments::store::all(connection).await?;
        let imports = crate::imports::store::known(connection).await?;
        let catalogue = segments::catalogue(connection, imports).await?;
        let checked = match segment {
            None => Ok(None),
            Some(id) => match saved.iter().find(|s| s.id == id) {
                None => Err("No segment has that id: it may have been deleted.".to_owned()),
                Some(found) => Filter::parse(&found.filter, &catalogue)
                    .map(|filter| {
                        let frozen = Frozen::freeze(&filter, &catalogue);
                        Some((filter, frozen))
                    })
                    .map_err(|e| format!("This segment cannot be used as it is: {e}")),
            },
        };
        Ok(Self {
            live: all
                .into_iter()
                .filter(|l| l.archived_at.is_none())
                .collect(),
            saved,
            segment: checked,
        })
    }

    pub fn live_ids(&self) -> Vec<Uuid> {
        self.live.iter().map(|l| l.id).collect()
    }

    /// Whether there are lists to choose from: with one live list, an issue
    /// goes to every confirmed subscriber.
    pub fn offers_lists(&self) -> bool {
        self.live.len() > 1
    }

    /// The lists to record on the issue: `None` for every confirmed
    /// subscriber (one list, nothing to choose), or the chosen ones, each
    /// of which must be live, and at least one.
    pub fn check(&self, chosen: Option<Vec<Uuid>>) -> Result<Option<Vec<Uuid>>, String> {
        let Some(chosen) = chosen else {
            return Ok(None);
        };
        if !self.offers_lists() && chosen.is_empty() {
            return Ok(None);
        }
        if chosen.is_empty() {
            return Err("Choose at least one list to send to.".into());
        }
        self.all_live(&chosen)?;
        Ok(Some(chosen))
    }

    fn all_live(&self, chosen: &[Uuid]) -> Result<(), String> {
        if chosen
            .iter()
            .all(|id| self.live.iter().any(|l| l.id == *id))
        {
            Ok(())
        } else {
            Err("One of the lists chosen does not exist or is archived.".into())
        }
    }

    /// What a draft keeps, checked as far as it can be before the draft
    /// is published: each list named is live, and the segment can be
    /// used. Whether lists must be named at all is left to publishing: a
    /// draft may be saved before its audience is decided.
    pub fn check_draft(&self, chosen: &[Uuid]) -> Result<(), Refused> {
        self.all_live(chosen).map_err(|reason| Refused {
            field: "lists",
            reason,
        })?;
        self.segment.as_ref().map_err(|reason| Refused {
            field: "segment",
            reason: reason.clone(),
        })?;
        Ok(())
    }

    /// The lists and the frozen segment to record on the issue, from the
    /// lists chosen: a segment narrows the readers of lists, of every live
    /// one when there is nothing chosen. `Err` names the field refused.
    pub fn audience(&self, chosen: Option<Vec<Uuid>>) -> Result<Audience, Refused> {
        let list_ids = self.check(chosen).map_err(|reason| Refused {
            field: "lists",
            reason,
        })?;
        let segment = self.segment.clone().map_err(|reason| Refused {
            field: "segment",
            reason,
        })?;
        let list_ids = match (&segment, list_ids) {
            (Some(_), None) => Some(self.live_ids()),
            (_, list_ids) => list_ids,
        };
        Ok(Audience {
            list_ids,
            segment: segment.map(|(_, frozen)| frozen),
        })
    }
}
