//! The rows of a multi-row statement, column by column, each column named
//! where its value is written, for each backend to bind its own way:
//! SQLite as a `VALUES` list, PostgreSQL as one array per column under
//! `UNNEST`. A `VALUES` list is a new statement text for every number of
//! rows, which PostgreSQL parses and plans again, and binds a value per
//! field; under `UNNEST` the text is one per table, prepared once per
//! connection, and binds one array per column (BENCHMARKS.md has the
//! measurements behind the choice).
//!
//! The statement's column list is the names the rows were written with, so
//! a value and the column it goes to are named on one line: no list
//! elsewhere must be kept in the same order by eye.

use std::borrow::Cow;

/// Rows per multi-row statement, for every table: under SQLite's 32,766
/// bound variables at the widest row (a run's 26 columns), and few enough
/// statements that a sweep of 500 runs writes each table in one.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

#[derive(Default)]
pub(crate) struct Rows<'a> {
    columns: Vec<Column<'a>>,
    len: usize,
}

/// One column: its name and its values, a row each.
struct Column<'a> {
    name: &'static str,
    values: Values<'a>,
}

enum Values<'a> {
    Text(Vec<Option<Cow<'a, str>>>),
    Int(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
}

/// One field on its way into a column.
enum Value<'a> {
    Text(Option<Cow<'a, str>>),
    Int(Option<i64>),
    Bool(Option<bool>),
}

/// One row being written into [`Rows`], its fields in column order.
pub(crate) struct Row<'r, 'a> {
    rows: &'r mut Rows<'a>,
    column: usize,
}

impl<'a> Rows<'a> {
    /// The rows of `items`, each written by `row`, which must write the same
    /// columns, of the same types, in the same order, for every item.
    pub(crate) fn of<T>(
        items: impl IntoIterator<Item = T>,
        mut row: impl FnMut(&mut Row<'_, 'a>, T),
    ) -> Rows<'a> {
        let mut rows = Rows::default();
        for item in items {
            let mut writer = Row {
                rows: &mut rows,
                column: 0,
            };
            row(&mut writer, item);
            let written = writer.column;
            assert_eq!(
                written,
                rows.columns.len(),
                "a row wrote fewer columns than the first"
            );
            rows.len += 1;
        }
        rows
    }

    /// The column names, in order, as a statement's column list.
    pub(crate) fn column_list(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|c| c.name).collect();
        names.join(", ")
    }

    /// Appends the rows as a `VALUES` list (SQLite).
    pub(crate) fn values<DB: sqlx::Database>(self, query: &mut sqlx::QueryBuilder<DB>)
    where
        Option<Cow<'a, str>>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        Option<i64>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        Option<bool>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    {
        enum Fields<'a> {
            Text(std::vec::IntoIter<Option<Cow<'a, str>>>),
            Int(std::vec::IntoIter<Option<i64>>),
            Bool(std::vec::IntoIter<Option<bool>>),
        }
        let mut columns: Vec<Fields<'a>> = self
            .columns
            .into_iter()
            .map(|column| match column.values {
                Values::Text(values) => Fields::Text(values.into_iter()),
                Values::Int(values) => Fields::Int(values.into_iter()),
                Values::Bool(values) => Fields::Bool(values.into_iter()),
            })
            .collect();
        query.push_values(0..self.len, |mut row, _| {
            // Every column holds `len` values: `of` checks each row.
            for column in &mut columns {
                match column {
                    Fields::Text(values) => row.push_bind(values.next().flatten()),
                    Fields::Int(values) => row.push_bind(values.next().flatten()),
                    Fields::Bool(values) => row.push_bind(values.next().flatten()),
                };
            }
        });
    }

    /// Appends the rows as `SELECT * FROM UNNEST(...)`, an array per column
    /// (PostgreSQL).
    pub(crate) fn unnest<DB: sqlx::Database>(self, query: &mut sqlx::QueryBuilder<DB>)
    where
        Vec<Option<Cow<'a, str>>>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        Vec<Option<i64>>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
        Vec<Option<bool>>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    {
        query.push("SELECT * FROM UNNEST(");
        let mut arrays = query.separated(", ");
        for column in self.columns {
            match column.values {
                Values::Text(values) => arrays.push_bind(values),
                Values::Int(values) => arrays.push_bind(values),
                Values::Bool(values) => arrays.push_bind(values),
            };
        }
        query.push(")");
    }

    /// The names of the columns in which any row differs from the same row
    /// of `before` (the same items, written by the same function, before
    /// they changed).
    pub(crate) fn changed(&self, before: &Rows<'_>) -> Vec<&'static str> {
        assert_eq!(
            self.len, before.len,
            "the rows before a change are the same rows"
        );
        let same = |a: &Values<'_>, b: &Values<'_>| match (a, b) {
            (Values::Text(a), Values::Text(b)) => a == b,
            (Values::Int(a), Values::Int(b)) => a == b,
            (Values::Bool(a), Values::Bool(b)) => a == b,
            _ => false,
        };
        self.columns
            .iter()
            .filter(|column| {
                !before
                    .columns
                    .iter()
                    .any(|b| b.name == column.name && same(&column.values, &b.values))
            })
            .map(|column| column.name)
            .collect()
    }
}

impl<'a> Row<'_, 'a> {
    fn push(&mut self, name: &'static str, value: Value<'a>) -> &mut Self {
        let i = self.column;
        self.column += 1;
        let columns = &mut self.rows.columns;
        if i == columns.len() {
            // The first row names the columns; the others fill them.
            assert_eq!(self.rows.len, 0, "a row wrote more columns than the first");
            columns.push(Column {
                name,
                values: match value {
                    Value::Text(_) => Values::Text(Vec::new()),
                    Value::Int(_) => Values::Int(Vec::new()),
                    Value::Bool(_) => Values::Bool(Vec::new()),
                },
            });
        }
        let column = &mut columns[i];
        assert_eq!(
            column.name, name,
            "column {i} is `{}` in the first row",
            column.name
        );
        match (&mut column.values, value) {
            (Values::Text(values), Value::Text(value)) => values.push(value),
            (Values::Int(values), Value::Int(value)) => values.push(value),
            (Values::Bool(values), Value::Bool(value)) => values.push(value),
            _ => panic!("column `{name}` changed its type between rows"),
        }
        self
    }

    pub(crate) fn text(&mut self, name: &'static str, value: impl Into<Cow<'a, str>>) -> &mut Self {
        self.push(name, Value::Text(Some(value.into())))
    }

    pub(crate) fn opt_text(
        &mut self,
        name: &'static str,
        value: Option<impl Into<Cow<'a, str>>>,
    ) -> &mut Self {
        self.push(name, Value::Text(value.map(Into::into)))
    }

    pub(crate) fn int(&mut self, name: &'static str, value: i64) -> &mut Self {
        self.push(name, Value::Int(Some(value)))
    }

    pub(crate) fn opt_int(&mut self, name: &'static str, value: Option<i64>) -> &mut Self {
        self.push(name, Value::Int(value))
    }

    pub(crate) fn bool(&mut self, name: &'static str, value: bool) -> &mut Self {
        self.push(name, Value::Bool(Some(value)))
    }

    pub(crate) fn opt_bool(&mut self, name: &'static str, value: Option<bool>) -> &mut Self {
        self.push(name, Value::Bool(value))
    }
}

#[cfg(test)]
mod tests {
    use super::Rows;

    fn rows(n: i64) -> Rows<'static> {
        Rows::of(0..n, |row, i| {
            row.text("a", format!("id_{i}"))
                .opt_int("b", Some(i))
                .opt_bool("c", None);
        })
    }

    /// PostgreSQL's statement is one text for any number of rows, so that it
    /// is parsed once per connection, with one value bound per column.
    #[test]
    fn unnest_binds_an_array_per_column_whatever_the_rows() {
        let sql = |n| {
            let rows = rows(n);
            let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
                "INSERT INTO t ({}) ",
                rows.column_list()
            ));
            rows.unnest(&mut query);
            query.into_string()
        };
        assert_eq!(
            sql(1),
            "INSERT INTO t (a, b, c) SELECT * FROM UNNEST($1, $2, $3)"
        );
        assert_eq!(sql(1), sql(500));
    }

    #[test]
    fn values_binds_each_field_row_by_row() {
        let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO t (a, b, c) ");
        rows(2).values(&mut query);
        assert_eq!(
            query.into_string(),
            "INSERT INTO t (a, b, c) VALUES (?, ?, ?), (?, ?, ?)"
        );
    }

    /// A column is changed when any one row's value differs, in value or
    /// in being NULL; the others are not written back.
    #[test]
    fn changed_names_the_columns_any_row_changed() {
        let rows = |items: [(i64, Option<&'static str>, bool); 2]| {
            Rows::of(items, |row, (i, t, b)| {
                row.int("n", i).opt_text("t", t).bool("b", b);
            })
        };
        let before = rows([(1, Some("a"), true), (2, None, false)]);
        let same = rows([(1, Some("a"), true), (2, None, false)]);
        assert_eq!(same.changed(&before), Vec::<&str>::new());
        let one_filled = rows([(1, Some("a"), true), (2, Some("b"), false)]);
        assert_eq!(one_filled.changed(&before), vec!["t"]);
        let one_flipped = rows([(1, Some("a"), false), (2, None, false)]);
        assert_eq!(one_flipped.changed(&before), vec!["b"]);
    }

    #[test]
    #[should_panic(expected = "a row wrote more columns than the first")]
    fn a_row_must_not_add_columns() {
        Rows::of([1, 2], |row, n| {
            for _ in 0..n {
                row.int("n", n);
            }
        });
    }

    #[test]
    #[should_panic(expected = "column `b` changed its type")]
    fn a_row_must_keep_the_columns_types() {
        Rows::of([true, false], |row, first| {
            row.text("a", "a");
            if first {
                row.int("b", 1);
            } else {
                row.bool("b", true);
            }
        });
    }

    #[test]
    #[should_panic(expected = "column 0 is `a` in the first row")]
    fn a_row_must_name_the_columns_as_the_first_did() {
        Rows::of([true, false], |row, first| {
            row.text(if first { "a" } else { "b" }, "x");
        });
    }
}
