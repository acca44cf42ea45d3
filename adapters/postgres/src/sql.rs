//! The SQL codec: quoting, the types of created columns, how values travel
//! (as text, cast in SQL), the statements that write a batch, and what a
//! server error means.

use tokio_postgres::error::SqlState;

use chittysync::{ColumnSpec, FieldKind, Value};

use crate::layout::Column;

/// `"name"` with inner quotes doubled: safe for any identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with inner quotes doubled (standard_conforming_strings is on
/// since PG 9.1, so backslashes are plain characters).
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

pub(crate) fn db_reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(": ");
                s.push_str(d);
            }
            s
        }
        None => {
            // The cause (an I/O or TLS error) is only in the source chain.
            let mut s = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                let text = c.to_string();
                if !s.contains(&text) {
                    s.push_str(": ");
                    s.push_str(&text);
                }
                cause = c.source();
            }
            s
        }
    }
}

pub(crate) fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// A data error about particular rows (constraint violations, bad input):
/// report per row, never retry.
pub(crate) fn is_data_error(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("23") || c.code().starts_with("22"))
}

/// The SQL type a registry field gets in a table created from the schema.
pub(crate) fn sql_type(c: &ColumnSpec) -> String {
    match c.field_type {
        FieldKind::Integer => "bigint".into(),
        FieldKind::Decimal => "numeric".into(),
        FieldKind::Bool => "boolean".into(),
        FieldKind::Date => "date".into(),
        FieldKind::Datetime => "timestamptz".into(),
        FieldKind::MultiSelect => "text[]".into(),
        FieldKind::Json => "jsonb".into(),
        FieldKind::Select if !c.options.is_empty() => {
            let options: Vec<String> = c.options.iter().map(|o| literal(o)).collect();
            format!(
                "text CHECK ({} IN ({}))",
                ident(&c.column),
                options.join(", ")
            )
        }
        _ => "text".into(),
    }
}

/// The SQL expression reading column `c` as text (arrays as JSON).
pub(crate) fn read_expr(col: &Column, field: FieldKind) -> String {
    let c = ident(&col.name);
    if col.is_array {
        format!("array_to_json({c})::text")
    } else if field == FieldKind::Datetime {
        format!("to_json({c}) #>> '{{}}'")
    } else {
        format!("{c}::text")
    }
}

/// The SQL expression casting text parameter column `u.{p}` to `col`'s type.
pub(crate) fn write_expr(param: &str, col: &Column) -> String {
    if col.is_array {
        format!(
            "CASE WHEN {param} IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text({param}::jsonb))::{} END",
            col.type_name
        )
    } else {
        format!("{param}::{}", col.type_name)
    }
}

/// A value as the text parameter it travels as: for an array column, a
/// JSON array of strings; else its text.
pub(crate) fn param_text(v: &Value, col: &Column) -> String {
    if col.is_array {
        let items: Vec<String> = match v {
            Value::Set(s) => s.iter().cloned().collect(),
            other => vec![other.to_string()],
        };
        serde_json::to_string(&items).expect("strings serialize")
    } else {
        v.to_string()
    }
}

/// The upsert of a batch of creates into `table` (quoted): `$1` the ids,
/// then one `text[]` per column of `columns`. A row that would not change
/// is left alone (`IS DISTINCT FROM`), so applying it again changes
/// nothing.
pub(crate) fn upsert_sql(table: &str, id: &Column, columns: &[&Column]) -> String {
    let id_cast = format!("u.id::{}", id.type_name);
    let id = ident(&id.name);
    let names: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
    let unnest_args: Vec<String> = (0..=columns.len())
        .map(|i| format!("${}::text[]", i + 1))
        .collect();
    let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    let exprs: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, col)| write_expr(&format!("u.c{i}"), col))
        .collect();
    let mut sql = format!(
        "INSERT INTO {table} AS t ({id}{sep}{names}) SELECT {id_cast}{sep}{exprs} FROM unnest({args}) AS u(id{sep}{aliases}) ON CONFLICT ({id}) ",
        sep = if columns.is_empty() { "" } else { ", " },
        names = names.join(", "),
        exprs = exprs.join(", "),
        args = unnest_args.join(", "),
        aliases = aliases.join(", "),
    );
    if columns.is_empty() {
        sql.push_str("DO NOTHING");
    } else {
        let sets: Vec<String> = names
            .iter()
            .map(|n| format!("{n} = excluded.{n}"))
            .collect();
        let olds: Vec<String> = names.iter().map(|n| format!("t.{n}")).collect();
        let news: Vec<String> = names.iter().map(|n| format!("excluded.{n}")).collect();
        sql.push_str(&format!(
            "DO UPDATE SET {} WHERE ROW({}) IS DISTINCT FROM ROW({})",
            sets.join(", "),
            olds.join(", "),
            news.join(", ")
        ));
    }
    sql
}

/// The update of a batch of rows in `table` (quoted): `$1` the ids, then
/// for each column of `touched` a `text[]` of values and a `bool[]` of
/// whether the row changes it. Only rows that change are written.
pub(crate) fn update_sql(table: &str, id: &Column, touched: &[&Column]) -> String {
    let id_cast = format!("u.id::{}", id.type_name);
    let id = ident(&id.name);
    let mut unnest_args = vec!["$1::text[]".to_owned()];
    let mut aliases = vec!["id".to_owned()];
    let mut sets = Vec::new();
    let mut olds = Vec::new();
    let mut news = Vec::new();
    for (i, col) in touched.iter().enumerate() {
        unnest_args.push(format!("${}::text[]", 2 + 2 * i));
        unnest_args.push(format!("${}::bool[]", 3 + 2 * i));
        aliases.push(format!("v{i}"));
        aliases.push(format!("m{i}"));
        let name = ident(&col.name);
        let new = format!(
            "CASE WHEN u.m{i} THEN {} ELSE t.{name} END",
            write_expr(&format!("u.v{i}"), col)
        );
        sets.push(format!("{name} = {new}"));
        olds.push(format!("t.{name}"));
        news.push(new);
    }
    format!(
        "UPDATE {table} AS t SET {} FROM unnest({}) AS u({}) WHERE t.{id} = {id_cast} AND ROW({}) IS DISTINCT FROM ROW({})",
        sets.join(", "),
        unnest_args.join(", "),
        aliases.join(", "),
        olds.join(", "),
        news.join(", "),
    )
}

/// The delete of a batch of rows from `table` (quoted): `$1` the ids.
pub(crate) fn delete_sql(table: &str, id: &Column) -> String {
    format!(
        "DELETE FROM {table} WHERE {} = ANY($1::text[]::{}[])",
        ident(&id.name),
        id.type_name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, type_name: &str, is_array: bool) -> Column {
        Column {
            name: name.into(),
            type_name: type_name.into(),
            is_array,
        }
    }

    #[test]
    fn batch_statements_cast_text_parameters_to_each_column() {
        let id = column("id", "text", false);
        let port = column("port", "bigint", false);
        let tags = column("tags", "text[]", true);
        let upsert = upsert_sql(r#""s"."t""#, &id, &[&port, &tags]);
        assert!(
            upsert.starts_with(r#"INSERT INTO "s"."t" AS t ("id", "port", "tags") SELECT u.id::text, u.c0::bigint, CASE WHEN u.c1 IS NULL"#),
            "{upsert}"
        );
        assert!(
            upsert.contains("FROM unnest($1::text[], $2::text[], $3::text[]) AS u(id, c0, c1)")
        );
        assert!(upsert.ends_with(r#"WHERE ROW(t."port", t."tags") IS DISTINCT FROM ROW(excluded."port", excluded."tags")"#));
        assert!(upsert_sql("t", &id, &[]).ends_with("ON CONFLICT (\"id\") DO NOTHING"));
        let update = update_sql("t", &id, &[&port]);
        assert_eq!(
            update,
            r#"UPDATE t AS t SET "port" = CASE WHEN u.m0 THEN u.v0::bigint ELSE t."port" END FROM unnest($1::text[], $2::text[], $3::bool[]) AS u(id, v0, m0) WHERE t."id" = u.id::text AND ROW(t."port") IS DISTINCT FROM ROW(CASE WHEN u.m0 THEN u.v0::bigint ELSE t."port" END)"#
        );
        assert_eq!(
            delete_sql("t", &id),
            r#"DELETE FROM t WHERE "id" = ANY($1::text[]::text[])"#
        );
        let set = Value::Set(["b".to_owned(), "a".to_owned()].into());
        assert_eq!(param_text(&set, &tags), r#"["a","b"]"#);
        assert_eq!(param_text(&Value::Integer(7), &port), "7");
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(
            ident(r#"a"; DROP TABLE x; --"#),
            r#""a""; DROP TABLE x; --""#
        );
        assert_eq!(literal("it's"), "'it''s'");
    }
}
