//! Pages of a list under `/api/v1`: `after` (the `next` of the page
//! before) and `limit`, read the same way for issues and drafts, and the
//! page cut from one row more than asked, whose presence says whether a
//! next page exists.

use serde::Deserialize;

use crate::api::problem::{FieldError, Problem};

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParameters {
    /// The `next` of the page before.
    #[param(value_type = Option<Uuid>)]
    after: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

/// How many rows a page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(i64);

impl Limit {
    /// What to ask the store for: one row more than the page.
    pub fn ask(self) -> i64 {
        self.0 + 1
    }

    /// The page out of the rows [`Limit::ask`] asked for, and the `next`
    /// cursor (`cursor` of its last row) when there were more.
    pub fn split<T, C>(self, mut rows: Vec<T>, cursor: impl Fn(&T) -> C) -> (Vec<T>, Option<C>) {
        let more = rows.len() as i64 > self.0;
        rows.truncate(self.0 as usize);
        let next = more.then(|| rows.last().map(&cursor)).flatten();
        (rows, next)
    }
}

/// `after`, read by `cursor` (`None`: not one), and `limit`.
pub fn parse_page<T>(
    raw: &str,
    cursor: impl Fn(&str) -> Option<T>,
) -> Result<(Option<T>, Limit), Problem> {
    let parameters: PageParameters = serde_urlencoded::from_str(raw)
        .map_err(|e| Problem::BadRequest(format!("The query string could not be read: {e}.")))?;
    let mut errors = Vec::new();
    let limit = match parameters.limit.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .unwrap_or_else(|| {
                errors.push(FieldError::new(
                    "limit",
                    format!("`limit` is a whole number from 1 to {MAX_LIMIT}."),
                ));
                DEFAULT_LIMIT
            }),
    };
    let after = match parameters.after.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => cursor(raw).or_else(|| {
            errors.push(FieldError::new(
                "after",
                "`after` is the `next` of the page before.",
            ));
            None
        }),
    };
    if errors.is_empty() {
        Ok((after, Limit(limit)))
    } else {
        Err(Problem::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_cut_from_one_row_more_and_names_its_last_row_when_more_follow() {
        let limit = Limit(2);
        assert_eq!(limit.ask(), 3);
        assert_eq!(limit.split(vec![1, 2, 3], |n| *n), (vec![1, 2], Some(2)));
        assert_eq!(limit.split(vec![1, 2], |n| *n), (vec![1, 2], None));
        assert_eq!(limit.split(Vec::<i32>::new(), |n| *n), (vec![], None));
    }

    #[test]
    fn limit_and_after_are_checked_and_named() {
        let parsed = parse_page("limit=5&after=7", |raw| raw.parse::<u8>().ok()).unwrap();
        assert_eq!(parsed, (Some(7), Limit(5)));
        let Err(Problem::Invalid(errors)) =
            parse_page("limit=0&after=x", |raw| raw.parse::<u8>().ok())
        else {
            panic!("refused");
        };
        let names: Vec<_> = errors.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["limit", "after"]);
    }
}
