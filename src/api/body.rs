//! Reading a JSON body field by field, so that a refusal names the field:
//! serde's own messages name a line and a column, which tell a program
//! nothing it can act on. The body must be a JSON object; each field is
//! read with the type it must have, and every refusal is collected, so that
//! one answer names them all.

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::api::problem::{FieldError, Problem};

/// At most this many lists in one request, as on the sign-up form.
const MAX_LISTS: usize = 50;

/// The body's fields, and what was refused while reading them.
pub struct Fields {
    object: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields {
    /// The body as an object: 400 for a body that is not JSON, 422 for
    /// JSON that is not an object.
    pub fn parse(body: &[u8]) -> Result<Self, Problem> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Problem::BadRequest(format!("The body is not JSON: {e}.")))?;
        match value {
            Value::Object(object) => Ok(Self {
                object,
                errors: Vec::new(),
            }),
            _ => Err(Problem::invalid("body", "The body must be a JSON object.")),
        }
    }

    /// An object's fields, read as a body's are: for a field whose value
    /// is an object. Refusals name the inner field; [`Fields::adopt`]
    /// takes them back under the outer one's name.
    pub fn of(object: Map<String, Value>) -> Self {
        Self {
            object,
            errors: Vec::new(),
        }
    }

    /// An object field; `None` when absent or null.
    pub fn object(&mut self, name: &str) -> Option<Map<String, Value>> {
        match self.object.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Object(object)) => Some(object.clone()),
            Some(_) => {
                self.refuse(name, format!("`{name}` must be an object."));
                None
            }
        }
    }

    /// Takes the refusals of `inner`, the fields of object `name`, as
    /// `name.field`.
    pub fn adopt(&mut self, name: &str, inner: Fields) {
        for error in inner.errors {
            self.refuse(&format!("{name}.{}", error.name), error.reason);
        }
    }

    /// Whether the field is there, null or not: for a change, where null
    /// clears what absent leaves alone.
    pub fn given(&self, name: &str) -> bool {
        self.object.contains_key(name)
    }

    /// Whether the field is there and not null.
    pub fn present(&self, name: &str) -> bool {
        !matches!(self.object.get(name), None | Some(Value::Null))
    }

    /// A string field; `None` when absent or null.
    pub fn string(&mut self, name: &str) -> Option<String> {
        match self.object.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.refuse(name, format!("`{name}` must be a string."));
                None
            }
        }
    }

    /// A string field that must be there.
    pub fn required_string(&mut self, name: &str) -> Option<String> {
        if matches!(self.object.get(name), None | Some(Value::Null)) {
            self.refuse(name, format!("`{name}` is required."));
            return None;
        }
        self.string(name)
    }

    /// An array of strings; empty when absent or null.
    pub fn strings(&mut self, name: &str) -> Vec<String> {
        match self.object.get(name) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect(),
            Some(_) => {
                self.refuse(name, format!("`{name}` must be an array of strings."));
                Vec::new()
            }
        }
    }

    /// An array of list ids, each kept once, at most [`MAX_LISTS`] (as on
    /// the sign-up form); each refusal recorded under `name`.
    pub fn list_ids(&mut self, name: &str) -> Vec<Uuid> {
        let raw_lists = self.strings(name);
        if raw_lists.len() > MAX_LISTS {
            self.refuse(name, format!("At most {MAX_LISTS} lists at once."));
            return Vec::new();
        }
        let mut lists: Vec<Uuid> = Vec::new();
        for raw in &raw_lists {
            match Uuid::try_parse(raw.trim()) {
                Ok(id) if !lists.contains(&id) => lists.push(id),
                Ok(_) => {}
                Err(_) => {
                    let shown: String = raw.chars().take(40).filter(|c| !c.is_control()).collect();
                    self.refuse(name, format!("`{shown}` is not a list's id."));
                    break;
                }
            }
        }
        lists
    }

    /// A boolean field; `None` when absent or null.
    pub fn boolean(&mut self, name: &str) -> Option<bool> {
        match self.object.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.refuse(name, format!("`{name}` must be true or false."));
                None
            }
        }
    }

    /// How many refusals were recorded so far: a step that reads a field
    /// in two stages compares it before and after the first.
    pub fn refusals(&self) -> usize {
        self.errors.len()
    }

    /// Whether anything was refused so far.
    pub fn has_refusals(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Records a refusal of `name`.
    pub fn refuse(&mut self, name: &str, reason: impl Into<String>) {
        self.errors.push(FieldError::new(name, reason));
    }

    /// `value`, or the refusal recorded for it: for a parse whose error
    /// names the field.
    pub fn parsed<T>(&mut self, name: &str, value: Result<T, String>) -> Option<T> {
        value.map_err(|reason| self.refuse(name, reason)).ok()
    }

    /// Ok when nothing was refused; otherwise 422 naming every refusal.
    pub fn finish(self) -> Result<(), Problem> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Problem::Invalid(self.errors))
        }
    }
}
