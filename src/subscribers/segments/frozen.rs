//! A segment as an issue keeps it: its filter, and the kinds of the
//! attributes it compares, as they were when the issue was published. The
//! issue's audience is recorded later, when it is due, and then a chunk at
//! a time; an attribute deleted or a segment edited meanwhile must not
//! change who it goes to, nor make its filter unreadable.

use serde::{Deserialize, Serialize};

use super::filter::{AttributeKind, Catalogue, Filter, FilterError, FilterSpec};

/// The frozen segment, as `newsletter_issues.segment` stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frozen {
    pub filter: FilterSpec,
    /// Every attribute definition of the moment, by name, with its kind.
    pub attributes: Vec<(String, String)>,
}

impl Frozen {
    /// `filter`, checked against `catalogue` now, with the attribute kinds
    /// it was checked against.
    pub fn freeze(filter: &Filter, catalogue: &Catalogue) -> Self {
        Self {
            filter: filter.to_spec(),
            attributes: catalogue
                .attributes
                .iter()
                .map(|(name, kind)| (name.clone(), kind.as_str().to_owned()))
                .collect(),
        }
    }

    /// The filter again, read against the attribute kinds it was frozen
    /// with and the lists and imports of now (lists are archived, imports
    /// kept: neither is deleted).
    pub fn thaw(
        &self,
        lists: Vec<(uuid::Uuid, String)>,
        imports: Vec<(uuid::Uuid, String)>,
    ) -> Result<Filter, FilterError> {
        let attributes = self
            .attributes
            .iter()
            .filter_map(|(name, kind)| Some((name.clone(), AttributeKind::parse(kind)?)))
            .collect();
        Filter::parse(
            &self.filter,
            &Catalogue {
                lists,
                attributes,
                imports,
            },
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a frozen segment is plain JSON")
    }

    pub fn from_json(json: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscribers::segments::filter::Condition;
    use uuid::Uuid;

    #[test]
    fn an_import_condition_is_kept_frozen_and_thawed_against_the_imports_of_now() {
        let import = Uuid::from_u128(5);
        let imports = vec![(import, "spring.csv onto News, 2026-03-01".to_owned())];
        let catalogue = Catalogue {
            imports: imports.clone(),
            ..Catalogue::default()
        };
        let filter = Filter::All(vec![Filter::Condition(Condition::FromImport(import))]);
        let stored = Frozen::freeze(&filter, &catalogue).to_json();
        assert_eq!(
            stored["filter"],
            serde_json::json!({"all": [{"import": {"id": import}}]})
        );
        let frozen = Frozen::from_json(stored).unwrap();
        assert_eq!(frozen.thaw(vec![], imports).unwrap(), filter);
        assert_eq!(
            frozen.thaw(vec![], vec![]).unwrap_err(),
            FilterError::UnknownImport(import)
        );
    }
}
