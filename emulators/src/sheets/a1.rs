//! A1 notation, as the Sheets API reads it: `Sheet1!A1:C10`,
//! `'My Sheet'!A2:Z`, `A:C`, `2:5`, `Sheet1`, `A1`, with `''` escaping a
//! quote inside a quoted sheet name.

/// A parsed range: the sheet it names (or `None` for the first sheet) and
/// 0-based bounds; `None` bounds are open (to the grid's edge).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct A1Range {
    pub(crate) sheet: Option<String>,
    pub(crate) start_row: usize,
    pub(crate) start_col: usize,
    /// Exclusive.
    pub(crate) end_row: Option<usize>,
    /// Exclusive.
    pub(crate) end_col: Option<usize>,
}

/// The largest column Sheets allows (`ZZZ`).
const MAX_COLUMNS: usize = 18_278;

/// Parses `text`; `sheet_exists` settles whether a bare name such as
/// `Sheet1` is a sheet (the whole sheet) or a cell range on the first sheet.
pub(crate) fn parse(text: &str, sheet_exists: impl Fn(&str) -> bool) -> Option<A1Range> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let (sheet, cells) = if let Some(rest) = text.strip_prefix('\'') {
        let (name, after) = quoted_name(rest)?;
        match after.strip_prefix('!') {
            Some(cells) => (Some(name), Some(cells)),
            None if after.is_empty() => (Some(name), None),
            None => return None,
        }
    } else if let Some(at) = text.rfind('!') {
        let name = &text[..at];
        if name.is_empty() || name.contains('\'') {
            return None;
        }
        (Some(name.to_owned()), Some(&text[at + 1..]))
    } else if sheet_exists(text) {
        (Some(text.to_owned()), None)
    } else {
        (None, Some(text))
    };
    let whole = A1Range {
        sheet,
        start_row: 0,
        start_col: 0,
        end_row: None,
        end_col: None,
    };
    match cells {
        None => Some(whole),
        Some(cells) => cell_range(cells, whole),
    }
}

/// Reads a quoted name up to its closing quote; returns it and the rest.
fn quoted_name(rest: &str) -> Option<(String, &str)> {
    let mut name = String::new();
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if let Some((_, '\'')) = chars.peek() {
                chars.next();
                name.push('\'');
            } else {
                return (!name.is_empty()).then(|| (name, &rest[i + 1..]));
            }
        } else {
            name.push(c);
        }
    }
    None
}

/// One end of a range: `A1`, `A` or `1` (0-based column and row).
fn cell_ref(text: &str) -> Option<(Option<usize>, Option<usize>)> {
    let text = text.trim_start_matches('$');
    let letters_end = text
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (letters, rest) = text.split_at(letters_end);
    let digits = rest.strip_prefix('$').unwrap_or(rest);
    if letters.is_empty() && digits.is_empty() {
        return None;
    }
    let col = if letters.is_empty() {
        None
    } else {
        if letters.len() > 3 {
            return None;
        }
        let n = letters.chars().fold(0usize, |n, c| {
            n * 26 + (c.to_ascii_uppercase() as usize - 'A' as usize + 1)
        });
        if n > MAX_COLUMNS {
            return None;
        }
        Some(n - 1)
    };
    let row = if digits.is_empty() {
        None
    } else {
        if !digits.chars().all(|c| c.is_ascii_digit()) || digits.len() > 9 {
            return None;
        }
        let n: usize = digits.parse().ok()?;
        if n == 0 {
            return None;
        }
        Some(n - 1)
    };
    Some((col, row))
}

fn cell_range(cells: &str, mut range: A1Range) -> Option<A1Range> {
    match cells.split_once(':') {
        None => {
            // A single reference must name a cell: `A1`.
            let (Some(col), Some(row)) = cell_ref(cells)? else {
                return None;
            };
            range.start_row = row;
            range.start_col = col;
            range.end_row = Some(row + 1);
            range.end_col = Some(col + 1);
        }
        Some((from, to)) => {
            let (c0, r0) = cell_ref(from)?;
            let (c1, r1) = cell_ref(to)?;
            // `A:C` and `2:5` must be the same kind at both ends; `A2:Z`
            // and `A:Z5` leave one end open.
            if (c0.is_none() && c1.is_some()) || (r0.is_none() && r1.is_some() && c0.is_none()) {
                return None;
            }
            if c0.is_none() != c1.is_none() && r0.is_none() {
                return None;
            }
            let (r0, r1) = match (r0, r1) {
                (Some(a), Some(b)) => (a.min(b), Some(a.max(b) + 1)),
                (Some(a), None) => (a, None),
                (None, Some(b)) => (0, Some(b + 1)),
                (None, None) => (0, None),
            };
            let (c0, c1) = match (c0, c1) {
                (Some(a), Some(b)) => (a.min(b), Some(a.max(b) + 1)),
                (Some(a), None) => (a, None),
                (None, _) => (0, None),
            };
            range.start_row = r0;
            range.end_row = r1;
            range.start_col = c0;
            range.end_col = c1;
        }
    }
    Some(range)
}

/// Column letters for a 0-based index: 0 → `A`, 26 → `AA`.
pub(crate) fn column_letters(index: usize) -> String {
    let mut n = index + 1;
    let mut letters = Vec::new();
    while n > 0 {
        let rem = (n - 1) % 26;
        letters.push((b'A' + rem as u8) as char);
        n = (n - 1) / 26;
    }
    letters.iter().rev().collect()
}

/// A sheet name as it appears in a range: quoted (with `''`) unless it is
/// plain letters, digits and underscores that cannot be read as a cell.
pub(crate) fn quote_sheet(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && cell_ref(name).is_none_or(|(c, r)| c.is_none() || r.is_none());
    if plain {
        name.to_owned()
    } else {
        format!("'{}'", name.replace('\'', "''"))
    }
}

/// `Sheet1!A1:C3` for 0-based, end-exclusive bounds (a single cell prints
/// as `A1`).
pub(crate) fn format_range(sheet: &str, rows: (usize, usize), cols: (usize, usize)) -> String {
    let start = format!("{}{}", column_letters(cols.0), rows.0 + 1);
    let end = format!(
        "{}{}",
        column_letters(cols.1.saturating_sub(1)),
        rows.1.max(rows.0 + 1)
    );
    if rows.1 <= rows.0 + 1 && cols.1 <= cols.0 + 1 {
        format!("{}!{start}", quote_sheet(sheet))
    } else {
        format!("{}!{start}:{end}", quote_sheet(sheet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sheets(name: &str) -> bool {
        ["Sheet1", "My Sheet", "Bob's", "Data"].contains(&name)
    }

    #[test]
    fn a1_notation_parses_like_the_sheets_api() {
        let r = |sheet: Option<&str>, sr, sc, er, ec| {
            Some(A1Range {
                sheet: sheet.map(str::to_owned),
                start_row: sr,
                start_col: sc,
                end_row: er,
                end_col: ec,
            })
        };
        let cases: Vec<(&str, Option<A1Range>)> = vec![
            ("Sheet1!A1:C10", r(Some("Sheet1"), 0, 0, Some(10), Some(3))),
            ("'My Sheet'!A2:Z", r(Some("My Sheet"), 1, 0, None, Some(26))),
            ("'Bob''s'!B3", r(Some("Bob's"), 2, 1, Some(3), Some(2))),
            ("'Bob''s'", r(Some("Bob's"), 0, 0, None, None)),
            ("A:C", r(None, 0, 0, None, Some(3))),
            ("Data!2:5", r(Some("Data"), 1, 0, Some(5), None)),
            ("Sheet1", r(Some("Sheet1"), 0, 0, None, None)),
            ("My Sheet", r(Some("My Sheet"), 0, 0, None, None)),
            ("A1", r(None, 0, 0, Some(1), Some(1))),
            ("Sheet1!C10:A1", r(Some("Sheet1"), 0, 0, Some(10), Some(3))),
            (
                "Sheet1!$A$1:$B$2",
                r(Some("Sheet1"), 0, 0, Some(2), Some(2)),
            ),
            ("Sheet1!AA1:AB", r(Some("Sheet1"), 0, 26, None, Some(28))),
            ("", None),
            ("Sheet1!", None),
            ("'Unclosed!A1", None),
            ("Sheet1!A0", None),
            ("Sheet1!1A", None),
            ("Sheet1!AAAA1", None),
            ("Sheet1!A1:", None),
            ("Sheet1!2:C", None),
            ("Sheet1!A1:B2:C3", None),
            ("'My Sheet'x", None),
            ("Nope", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text, sheets), expected, "parsing {text:?}");
        }
    }

    #[test]
    fn ranges_print_with_quoted_names_and_column_letters() {
        assert_eq!(column_letters(0), "A");
        assert_eq!(column_letters(25), "Z");
        assert_eq!(column_letters(26), "AA");
        assert_eq!(column_letters(701), "ZZ");
        assert_eq!(column_letters(702), "AAA");
        assert_eq!(
            format_range("Sheet1", (0, 1000), (0, 26)),
            "Sheet1!A1:Z1000"
        );
        assert_eq!(format_range("My Sheet", (1, 2), (2, 3)), "'My Sheet'!C2");
        assert_eq!(format_range("Bob's", (0, 2), (0, 1)), "'Bob''s'!A1:A2");
        assert_eq!(quote_sheet("A1"), "'A1'");
    }
}
