//! `labelSelector` and `fieldSelector` of lists, watches and collection
//! deletes, parsed and matched as the API server does. Pure.

use super::*;

/// One requirement of a label selector.
#[derive(Debug, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Missing(String),
}

/// What a list keeps: every requirement of both selectors holds.
#[derive(Debug, Default)]
pub(super) struct Selection {
    labels: Vec<Requirement>,
    /// `(field path, wanted equal, value)`.
    fields: Vec<(String, bool, String)>,
}

impl Selection {
    /// The selectors of a query string; `Err` is the API's `400` message.
    pub(super) fn from_query(query: &str) -> Result<Selection, String> {
        let labels = match query_param(query, "labelSelector") {
            Some(selector) => parse_labels(&selector)?,
            None => Vec::new(),
        };
        let fields = match query_param(query, "fieldSelector") {
            Some(selector) => parse_fields(&selector)?,
            None => Vec::new(),
        };
        Ok(Selection { labels, fields })
    }

    /// Whether `object` is selected.
    pub(super) fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels[key].as_str().map(str::to_string);
        self.labels.iter().all(|r| requirement_holds(r, &label))
            && self
                .fields
                .iter()
                .all(|(path, equal, value)| (field(object, path) == *value) == *equal)
    }
}

fn requirement_holds(requirement: &Requirement, label: &dyn Fn(&str) -> Option<String>) -> bool {
    match requirement {
        Requirement::Equals(key, value) => label(key).as_ref() == Some(value),
        Requirement::NotEquals(key, value) => label(key).as_ref() != Some(value),
        Requirement::In(key, values) => label(key).is_some_and(|v| values.contains(&v)),
        Requirement::NotIn(key, values) => !label(key).is_some_and(|v| values.contains(&v)),
        Requirement::Exists(key) => label(key).is_some(),
        Requirement::Missing(key) => label(key).is_none(),
    }
}

/// The value at a dotted path (`status.phase`), as text.
fn field(object: &Value, path: &str) -> String {
    let value = path.split('.').fold(object, |value, key| &value[key]);
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn parse_labels(selector: &str) -> Result<Vec<Requirement>, String> {
    split_top_level(selector)
        .into_iter()
        .filter(|part| !part.trim().is_empty())
        .map(|part| parse_requirement(part.trim()))
        .collect()
}

/// Splits at commas outside parentheses.
fn split_top_level(selector: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let invalid =
        || format!("unable to parse requirement: found '{part}', expected a label requirement");
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::Missing(valid_key(key.trim(), part)?));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(
            valid_key(key.trim(), part)?,
            value.trim().into(),
        ));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(
            valid_key(key.trim(), part)?,
            value.trim().into(),
        ));
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    match words.as_slice() {
        [key] => Ok(Requirement::Exists(valid_key(key, part)?)),
        [key, rest] => {
            let rest = rest.trim();
            let (negated, list) = match (rest.strip_prefix("notin"), rest.strip_prefix("in")) {
                (Some(list), _) => (true, list),
                (None, Some(list)) => (false, list),
                _ => return Err(invalid()),
            };
            let values = set_values(list).ok_or_else(invalid)?;
            let key = valid_key(key, part)?;
            Ok(if negated {
                Requirement::NotIn(key, values)
            } else {
                Requirement::In(key, values)
            })
        }
        _ => Err(invalid()),
    }
}

/// `(a, b)` to `[a, b]`.
fn set_values(list: &str) -> Option<Vec<String>> {
    let inner = list.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).collect())
}

fn valid_key(key: &str, part: &str) -> Result<String, String> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/".contains(c));
    if ok {
        Ok(key.to_string())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label key in '{part}'"
        ))
    }
}

fn parse_fields(selector: &str) -> Result<Vec<(String, bool, String)>, String> {
    selector
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (path, equal, value) = if let Some((p, v)) = part.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (p, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            Ok((path.trim().to_string(), equal, value.trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selects(query: &str, object: &Value) -> bool {
        Selection::from_query(query).unwrap().matches(object)
    }

    #[test]
    fn label_selectors_follow_the_api() {
        let pod = json!({"metadata": {"name": "db-0", "labels": {"app": "db", "tier": "data"}},
                         "status": {"phase": "Running"}});
        assert!(selects("labelSelector=app%3Ddb%2Ctier%3Ddata", &pod));
        assert!(selects("labelSelector=app==db", &pod));
        assert!(!selects("labelSelector=app!=db", &pod));
        assert!(selects("labelSelector=app", &pod));
        assert!(!selects("labelSelector=!app", &pod));
        assert!(selects("labelSelector=!other", &pod));
        assert!(selects("labelSelector=app in (web, db)", &pod));
        assert!(!selects("labelSelector=app notin (web,db)", &pod));
        assert!(selects("labelSelector=other notin (x)", &pod));
        assert!(selects("labelSelector=tier+in+%28data%29", &pod));
        assert!(!selects("labelSelector=app in (web)", &pod));
    }

    #[test]
    fn field_selectors_follow_the_api() {
        let pod = json!({"metadata": {"name": "db-0"}, "status": {"phase": "Running"}});
        assert!(selects("fieldSelector=metadata.name%3Ddb-0", &pod));
        assert!(selects(
            "fieldSelector=status.phase=Running,metadata.name!=x",
            &pod
        ));
        assert!(!selects("fieldSelector=status.phase!=Running", &pod));
    }

    #[test]
    fn bad_selectors_are_refused() {
        assert!(Selection::from_query("labelSelector=a in x").is_err());
        assert!(Selection::from_query("labelSelector=a b c").is_err());
        assert!(Selection::from_query("fieldSelector=nonsense").is_err());
    }
}
