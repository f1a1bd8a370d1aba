//! The custom attributes' fields on a subscriber's page: each one's stored
//! value, or what was typed and refused with the reason. The page shows
//! them ([`super::page`]); the form that sets them ([`super::attributes`])
//! hands its refusals back here.

use crate::routes::admin::pages::AttributeField;
use crate::subscribers::attributes::{self, Definition, FieldError, Values};

/// A form refused: what was typed, and why, to show on the page again.
pub struct Refused {
    pub typed: Vec<(String, String)>,
    pub errors: Vec<FieldError>,
}

/// The form's fields for the page: one per definition, in name order,
/// holding the stored value, or what was typed and refused with the
/// reason. Refusals about attributes the page has no field for (deleted
/// meanwhile, or never defined) come back as one message.
pub fn fields(
    definitions: Vec<Definition>,
    values: &Values,
    refused: Option<Refused>,
) -> (Vec<AttributeField>, Option<String>) {
    let (typed, mut errors) = refused
        .map(|refused| (refused.typed, refused.errors))
        .unwrap_or_default();
    let fields = definitions
        .into_iter()
        .map(|definition| {
            let error = errors
                .iter()
                .position(|e| e.name == definition.name)
                .map(|at| errors.remove(at).reason);
            let value = match typed.iter().find(|(name, _)| *name == definition.name) {
                Some((_, typed)) => typed.clone(),
                None => values
                    .get(&definition.name)
                    .map(attributes::display)
                    .unwrap_or_default(),
            };
            AttributeField {
                kind: definition.kind.as_str(),
                kind_label: definition.kind.label(),
                name: definition.name,
                value,
                error,
            }
        })
        .collect();
    let others = (!errors.is_empty()).then(|| {
        let named: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", shortened(&e.name), e.reason))
            .collect();
        format!("Nothing was saved. {}", named.join(" "))
    });
    (fields, others)
}

/// A name from the form as the page repeats it: any text a client sent,
/// so at most 64 characters of it, control characters replaced.
fn shortened(name: &str) -> String {
    let mut kept: String = name
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    if name.chars().count() > 64 {
        kept.push('…');
    }
    kept
}
