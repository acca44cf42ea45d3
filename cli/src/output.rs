//! Human tables and JSON output.

use chittysync::{Record, Schema};

/// Prints rows as an aligned table with a header.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers);
    let rules: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
    line(&rules.iter().map(String::as_str).collect::<Vec<_>>());
    for row in rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

/// Shortens long cell text for tables.
pub(crate) fn clip(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', "⏎");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Prints records as a table whose columns are the schema's fields.
pub(crate) fn records(schema: &Schema, records: &[Record]) {
    let mut headers = vec!["id"];
    headers.extend(schema.fields.iter().map(|f| f.name.as_str()));
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let mut row = vec![if r.deleted.is_some() {
                format!("{} (deleted)", r.id)
            } else {
                r.id.clone()
            }];
            for f in &schema.fields {
                let mut cell = r
                    .get(&f.name)
                    .map(|v| clip(&v.to_string(), 40))
                    .unwrap_or_default();
                if r.conflicted.contains(&f.name) {
                    cell.push_str(" ⚠");
                }
                row.push(cell);
            }
            row
        })
        .collect();
    table(&headers, &rows);
}

/// Prints a JSON value, pretty.
pub(crate) fn json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    );
}
