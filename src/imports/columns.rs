//! Which column of an import file holds what. The header row is read
//! against the names the common exports use, compared without case, spaces,
//! dashes or underscores (`Email Address`, `email_address` and `EMAIL` are
//! one name):
//!
//! | What | Our name | Mailchimp | Substack | listmonk |
//! | --- | --- | --- | --- | --- |
//! | the address (required) | `email` | `Email Address` | `email` | `email` |
//! | the name | `name` | `First Name` + `Last Name` | `name` | `name` |
//! | when they subscribed | `subscribed_at` | `OPTIN_TIME` | `created_at`, `subscription_date` | `created_at` |
//! | when they confirmed | `confirmed_at` | `CONFIRM_TIME` | | |
//! | whether they left | `status` | `UNSUB_TIME`, `CLEAN_TIME` (any value) | `email_disabled` (`true`) | `status` (`blocklisted`) |
//! | custom attributes | a column named after the attribute | | | `attributes` (a JSON object) |
//!
//! Every other column is ignored and named in the import's summary.

use csv::StringRecord;

use crate::subscribers::attributes::{Definition, Kind};

/// Where each known column is, by index in the header row.
#[derive(Debug, Clone)]
pub struct Columns {
    pub email: usize,
    pub name: Option<usize>,
    pub first_name: Option<usize>,
    pub last_name: Option<usize>,
    pub subscribed_at: Option<usize>,
    pub confirmed_at: Option<usize>,
    /// Columns that, holding what they say, mark a row as having left.
    pub left: Vec<(usize, Left)>,
    /// listmonk's JSON object of attributes.
    pub attributes_json: Option<usize>,
    /// Columns named after a defined attribute: (index, name, kind).
    pub attributes: Vec<(usize, String, Kind)>,
    /// The header names nothing here reads.
    pub ignored: Vec<String>,
    /// How many fields the header has.
    pub width: usize,
}

/// How a column says a row's address has left the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// A status column: a value among the statuses of having left.
    Status,
    /// A time of leaving (Mailchimp's `UNSUB_TIME`, `CLEAN_TIME`): any value.
    AnyValue(&'static str),
    /// A flag (Substack's `email_disabled`): true.
    Flag,
}

/// A header's name as compared: lower case, without spaces, dashes,
/// underscores or dots.
fn key(name: &str) -> String {
    name.trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

impl Columns {
    /// Reads the header row; the reason a person can read when it has no
    /// address column or names one thing twice.
    pub fn map(header: &StringRecord, definitions: &[Definition]) -> Result<Self, String> {
        let mut email = None;
        let mut columns = Columns {
            email: 0,
            name: None,
            first_name: None,
            last_name: None,
            subscribed_at: None,
            confirmed_at: None,
            left: Vec::new(),
            attributes_json: None,
            attributes: Vec::new(),
            ignored: Vec::new(),
            width: header.len(),
        };
        for (index, raw) in header.iter().enumerate() {
            let name = raw.trim_start_matches('\u{feff}');
            let slot = match key(name).as_str() {
                "email" | "emailaddress" | "mail" => &mut email,
                "name" | "fullname" => &mut columns.name,
                "firstname" | "fname" => &mut columns.first_name,
                "lastname" | "lname" => &mut columns.last_name,
                "subscribedat" | "optintime" | "createdat" | "subscriptiondate" | "signupdate" => {
                    &mut columns.subscribed_at
                }
                "confirmedat" | "confirmtime" => &mut columns.confirmed_at,
                "status" => {
                    columns.left.push((index, Left::Status));
                    continue;
                }
                "unsubtime" => {
                    columns.left.push((index, Left::AnyValue("unsubscribed")));
                    continue;
                }
                "cleantime" => {
                    columns
                        .left
                        .push((index, Left::AnyValue("cleaned (bounced)")));
                    continue;
                }
                "emaildisabled" => {
                    columns.left.push((index, Left::Flag));
                    continue;
                }
                "attributes" | "attribs" => &mut columns.attributes_json,
                _ => {
                    let lower = name.trim().to_lowercase();
                    match definitions.iter().find(|d| d.name == lower) {
                        Some(d) => columns.attributes.push((index, d.name.clone(), d.kind)),
                        None => columns.ignored.push(name.trim().to_owned()),
                    }
                    continue;
                }
            };
            if slot.is_some() {
                return Err(format!(
                    "The header names the column \"{}\" twice (or two columns that mean the same).",
                    name.trim()
                ));
            }
            *slot = Some(index);
        }
        columns.email = email.ok_or_else(|| {
            "The header row has no email column (\"email\" or \"Email Address\"): \
             the first line of the file must name the columns."
                .to_owned()
        })?;
        Ok(columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn header(names: &[&str]) -> StringRecord {
        StringRecord::from(names.to_vec())
    }

    #[test]
    fn mailchimp_substack_and_listmonk_headers_are_recognised() {
        let mailchimp = Columns::map(
            &header(&[
                "Email Address",
                "First Name",
                "Last Name",
                "MEMBER_RATING",
                "OPTIN_TIME",
                "CONFIRM_TIME",
                "UNSUB_TIME",
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(mailchimp.email, 0);
        assert_eq!(
            (mailchimp.first_name, mailchimp.last_name),
            (Some(1), Some(2))
        );
        assert_eq!(
            (mailchimp.subscribed_at, mailchimp.confirmed_at),
            (Some(4), Some(5))
        );
        assert_eq!(mailchimp.left, vec![(6, Left::AnyValue("unsubscribed"))]);
        assert_eq!(mailchimp.ignored, vec!["MEMBER_RATING"]);

        let substack = Columns::map(
            &header(&[
                "email",
                "active_subscription",
                "email_disabled",
                "created_at",
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(substack.subscribed_at, Some(3));
        assert_eq!(substack.left, vec![(2, Left::Flag)]);

        let listmonk = Columns::map(
            &header(&["uuid", "email", "name", "attributes", "status"]),
            &[],
        )
        .unwrap();
        assert_eq!(
            (listmonk.email, listmonk.name, listmonk.attributes_json),
            (1, Some(2), Some(3))
        );
        assert_eq!(listmonk.left, vec![(4, Left::Status)]);
    }

    #[test]
    fn a_column_named_after_a_defined_attribute_fills_it() {
        let definitions = [Definition {
            name: "city".into(),
            kind: Kind::Text,
            created_at: Utc::now(),
        }];
        let columns = Columns::map(&header(&["email", "City"]), &definitions).unwrap();
        assert_eq!(columns.attributes, vec![(1, "city".to_owned(), Kind::Text)]);
    }

    #[test]
    fn a_header_without_an_email_column_or_with_one_twice_is_refused() {
        let missing = Columns::map(&header(&["name"]), &[]).unwrap_err();
        assert!(missing.contains("no email column"), "{missing}");
        let twice = Columns::map(&header(&["email", "Email Address"]), &[]).unwrap_err();
        assert!(twice.contains("twice"), "{twice}");
    }
}
