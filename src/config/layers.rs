//! The configuration's sources as layers, each over the one before: the
//! defaults compiled into the binary (`default.toml`), the operator's file,
//! then the `ASSAY_*` variables, one layer per variable so that a value
//! that does not fit its key is reported with the variable that gave it.

use std::path::Path;

use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};

/// The defaults, commented: what every setting is until a file or a
/// variable says otherwise.
pub const DEFAULTS: &str = include_str!("default.toml");

/// One source's settings, named as an error names it.
pub(super) struct Layer {
    name: String,
    table: toml::Table,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        figment::providers::Serialized::defaults(&self.table).data()
    }
}

impl Layer {
    pub(super) fn defaults() -> Layer {
        Layer {
            name: "the built-in defaults".to_owned(),
            table: toml::from_str(DEFAULTS).unwrap_or_default(),
        }
    }

    /// The operator's file. A file that is not TOML is refused with its
    /// path, line and column and the parser's message, never the quoted
    /// line: it may hold a secret (a password in a mistyped key's value).
    pub(super) fn file(path: &Path) -> Result<Layer, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let table = toml::from_str::<toml::Table>(&text).map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!(" line {line}, column {column}")
                })
                .unwrap_or_default();
            format!("{}{at}: {}", path.display(), e.message().trim())
        })?;
        // Tables a later layer merges into: a value of another kind there
        // would be replaced by it, unseen, rather than refused.
        let not_table = |key: &str| format!("{}: `{key}` must be a table", path.display());
        for key in ["projects", "project_defaults"] {
            if table.get(key).is_some_and(|value| !value.is_table()) {
                return Err(not_table(key));
            }
        }
        if let Some(projects) = table.get("projects").and_then(toml::Value::as_table)
            && let Some((name, _)) = projects.iter().find(|(_, value)| !value.is_table())
        {
            return Err(format!(
                "{}: `projects.{name}` must be a table of the project's settings, such as [projects.{name}]",
                path.display()
            ));
        }
        Ok(Layer {
            name: path.display().to_string(),
            table,
        })
    }

    /// The layer's settings as TOML text (what a scan for `${NAME}` reads).
    pub(super) fn text(&self) -> String {
        self.table.to_string()
    }

    /// The names of the projects the layer's `projects` table holds.
    pub(super) fn projects(&self) -> Option<Vec<String>> {
        let projects = self.table.get("projects")?.as_table()?;
        Some(projects.keys().cloned().collect())
    }

    /// The variable `name` setting the key at `path` to `value`, as text:
    /// the key's own check reads it.
    pub(super) fn variable(name: &str, path: &[&str], value: &str) -> Layer {
        Layer {
            name: name.to_owned(),
            table: nest(path, toml::Value::String(value.to_owned())),
        }
    }

    /// An empty table at `path`, so that the key exists (the project the
    /// variables configure, when no file names it).
    pub(super) fn table(name: &str, path: &[&str]) -> Layer {
        Layer {
            name: name.to_owned(),
            table: nest(path, toml::Value::Table(toml::Table::new())),
        }
    }
}

/// `value` at the key path `path`, in nested tables.
fn nest(path: &[&str], value: toml::Value) -> toml::Table {
    let mut value = value;
    for key in path.iter().skip(1).rev() {
        let mut table = toml::Table::new();
        table.insert((*key).to_owned(), value);
        value = toml::Value::Table(table);
    }
    let mut root = toml::Table::new();
    if let Some(first) = path.first() {
        root.insert((*first).to_owned(), value);
    }
    root
}

/// The sources in order, each over the last.
fn merged<'a>(layers: impl IntoIterator<Item = &'a Layer>) -> Figment {
    layers
        .into_iter()
        .fold(Figment::new(), |figment, layer| figment.merge(layer))
}

/// The most problems one read of a table reports: each costs one more read.
const MAX_PROBLEMS: usize = 100;

/// Reads `T` from `layers`: the tables at the key paths `focus` (the root
/// when empty), each over the one before. Every problem goes to `errors`,
/// one line each. A key that is unknown or whose value does not fit is
/// reported, taken out of the layer that gave it and the rest read again,
/// so that one problem does not hide the next; `None` once a problem has
/// no key to take out, or after [`MAX_PROBLEMS`].
pub(super) fn extract<T: serde::de::DeserializeOwned>(
    layers: &mut [Layer],
    focus: &[String],
    errors: &mut Vec<String>,
) -> Option<T> {
    let mut taken = TakenElements::default();
    for _ in 0..MAX_PROBLEMS {
        let figment = merged(layers.iter());
        let focused = if focus.is_empty() {
            figment
        } else {
            focus.iter().fold(Figment::new(), |focused, key| {
                focused.merge(figment.focus(key))
            })
        };
        let problems = match focused.extract::<T>() {
            Ok(value) => return Some(value),
            Err(problems) => problems,
        };
        let mut every_one_taken_out = true;
        for problem in problems {
            let source = problem.metadata.as_ref().map(|m| m.name.to_string());
            let layer = layers
                .iter_mut()
                .find(|layer| source.as_deref() == Some(layer.name.as_str()));
            // The innermost focus that holds the key is where it was given.
            let held = layer.and_then(|layer| {
                let at = focus
                    .iter()
                    .rev()
                    .map(String::as_str)
                    .chain(focus.is_empty().then_some(""))
                    .find(|at| layer.has(&key_path(at, &problem.path)))?;
                Some((key_path(at, &problem.path), layer))
            });
            let line = match held {
                Some((path, layer)) => {
                    let line = describe(&problem, &layer.name, &taken.original(&layer.name, &path));
                    taken.record(&layer.name, &path);
                    layer.remove(&path);
                    line
                }
                None => {
                    every_one_taken_out = false;
                    let at = focus.last().map(String::as_str).unwrap_or("");
                    describe(
                        &problem,
                        source.as_deref().unwrap_or("the configuration"),
                        &key_path(at, &problem.path),
                    )
                }
            };
            if !errors.contains(&line) {
                errors.push(line);
            }
        }
        if !every_one_taken_out {
            return None;
        }
    }
    errors.push(format!(
        "more than {MAX_PROBLEMS} problems in one table: the rest are not listed"
    ));
    None
}

/// The array elements taken out of the layers so far, so that the elements
/// after one are still named by their place in the file.
#[derive(Default)]
struct TakenElements(Vec<(String, Vec<String>, usize)>);

impl TakenElements {
    /// `path` in `layer` as the file gives it: each index moved past the
    /// elements taken out before it.
    fn original(&self, layer: &str, path: &[String]) -> Vec<String> {
        let mut original: Vec<String> = Vec::with_capacity(path.len());
        for segment in path {
            let Ok(mut index) = segment.parse::<usize>() else {
                original.push(segment.clone());
                continue;
            };
            let mut before: Vec<usize> = self
                .0
                .iter()
                .filter(|(l, array, _)| l == layer && *array == original)
                .map(|(_, _, i)| *i)
                .collect();
            before.sort_unstable();
            for taken in before {
                if taken <= index {
                    index += 1;
                }
            }
            original.push(index.to_string());
        }
        original
    }

    /// Notes that the key at `path` is taken out, if it is an element.
    fn record(&mut self, layer: &str, path: &[String]) {
        let original = self.original(layer, path);
        if let Some((last, array)) = original.split_last()
            && let Ok(index) = last.parse::<usize>()
        {
            self.0.push((layer.to_owned(), array.to_vec(), index));
        }
    }
}

/// The key `path` under the dotted key path `at`.
fn key_path(at: &str, path: &[String]) -> Vec<String> {
    at.split('.')
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .chain(path.iter().cloned())
        .collect()
}

impl Layer {
    /// Whether the layer holds the key at `path` (a table's key, or an
    /// array's index).
    fn has(&self, path: &[String]) -> bool {
        let mut value = None::<&toml::Value>;
        for key in path {
            let next = match value {
                None => self.table.get(key.as_str()),
                Some(toml::Value::Table(table)) => table.get(key.as_str()),
                Some(toml::Value::Array(items)) => {
                    key.parse::<usize>().ok().and_then(|i| items.get(i))
                }
                Some(_) => None,
            };
            match next {
                Some(next) => value = Some(next),
                None => return false,
            }
        }
        value.is_some()
    }

    /// Takes the key at `path` (a table's key, or an array's index), which
    /// [`Layer::has`], out of the layer.
    fn remove(&mut self, path: &[String]) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut root = toml::Value::Table(std::mem::take(&mut self.table));
        match parents
            .iter()
            .try_fold(&mut root, |value, key| child(value, key))
        {
            Some(toml::Value::Table(table)) => {
                table.remove(last.as_str());
            }
            Some(toml::Value::Array(items)) => {
                if let Ok(index) = last.parse::<usize>()
                    && index < items.len()
                {
                    items.remove(index);
                }
            }
            _ => {}
        }
        if let toml::Value::Table(table) = root {
            self.table = table;
        }
    }
}

/// The value under `key`: a table's key, or an array's index.
fn child<'v>(value: &'v mut toml::Value, key: &str) -> Option<&'v mut toml::Value> {
    match value {
        toml::Value::Table(table) => table.get_mut(key),
        toml::Value::Array(items) => items.get_mut(key.parse::<usize>().ok()?),
        _ => None,
    }
}

/// One problem as a line: the source that gave the value (a file's path, a
/// variable's name), the key, and what is wrong.
fn describe(problem: &figment::Error, source: &str, key: &[String]) -> String {
    // figment's own words for an unknown key quote the list of known ones
    // twice over; say it as an operator reads it.
    let what = match &problem.kind {
        figment::error::Kind::UnknownField(found, known) => format!(
            "not a key Assay knows (the keys here are {}){}",
            known.join(", "),
            crate::settings::suggestion(found, known.iter().copied())
        ),
        kind => kind.to_string(),
    };
    if key.is_empty() {
        format!("{source}: {what}")
    } else {
        format!("{source}: `{}`: {what}", key.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_toml() {
        let table: toml::Table = toml::from_str(DEFAULTS).expect("default.toml parses");
        assert_eq!(table["bind"].as_str(), Some("127.0.0.1:8080"));
    }

    #[test]
    fn a_later_layer_wins_key_by_key() {
        let figment = merged(&[
            Layer::defaults(),
            Layer::variable("ASSAY_BIND", &["bind"], "127.0.0.1:9"),
            Layer::variable(
                "ASSAY_DEADLINE_RECONCILED",
                &["projects", "acme", "deadline_reconciled"],
                "30s",
            ),
        ]);
        let bind: String = figment.extract_inner("bind").unwrap();
        assert_eq!(bind, "127.0.0.1:9");
        let deadline: String = figment
            .extract_inner("projects.acme.deadline_reconciled")
            .unwrap();
        assert_eq!(deadline, "30s");
        let schedule: String = figment.extract_inner("sweep_schedule").unwrap();
        assert_eq!(schedule, "*/5 * * * * *", "the defaults stay beneath");
    }
}
