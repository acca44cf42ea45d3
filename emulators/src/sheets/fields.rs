//! Partial responses: the `fields` system parameter (a field mask such as
//! `sheets.properties(sheetId,title),spreadsheetId`), checked against the
//! Spreadsheet resource's schema and applied to a JSON answer. See
//! <https://developers.google.com/workspace/sheets/api/guides/field-masks>.
//!
//! Grammar: a comma list of paths; a path is names joined by `.`; a path may
//! end in a parenthesised sub-mask that applies beneath it; `*` selects
//! everything at its level. Unknown field names are refused (400
//! INVALID_ARGUMENT, as Google answers); fields under a message the
//! emulator has no schema for (e.g. `defaultFormat.…`) are not checked.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// A parsed mask: everything below this point, or only some fields.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Mask {
    All,
    Fields(BTreeMap<String, Mask>),
}

impl Mask {
    fn merge(&mut self, other: Mask) {
        match (&mut *self, other) {
            (Mask::All, _) => {}
            (_, Mask::All) => *self = Mask::All,
            (Mask::Fields(mine), Mask::Fields(theirs)) => {
                for (name, sub) in theirs {
                    match mine.get_mut(&name) {
                        Some(existing) => existing.merge(sub),
                        None => {
                            mine.insert(name, sub);
                        }
                    }
                }
            }
        }
    }
}

/// Parses a mask; `None` when it is malformed.
pub(crate) fn parse(text: &str) -> Option<Mask> {
    let chars: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    let mut pos = 0;
    let mask = parse_list(&chars, &mut pos)?;
    (pos == chars.len()).then_some(mask)
}

fn parse_list(chars: &[char], pos: &mut usize) -> Option<Mask> {
    let mut mask = Mask::Fields(BTreeMap::new());
    loop {
        let mut path = Vec::new();
        loop {
            let start = *pos;
            while *pos < chars.len() && (chars[*pos].is_ascii_alphanumeric() || chars[*pos] == '_')
            {
                *pos += 1;
            }
            if *pos == start && chars.get(*pos) == Some(&'*') {
                *pos += 1;
            }
            if *pos == start {
                return None;
            }
            path.push(chars[start..*pos].iter().collect::<String>());
            // Google's partial responses take `a/b` as well as `a.b`.
            if matches!(chars.get(*pos), Some(&'.') | Some(&'/')) {
                *pos += 1;
            } else {
                break;
            }
        }
        let mut sub = Mask::All;
        if chars.get(*pos) == Some(&'(') {
            *pos += 1;
            sub = parse_list(chars, pos)?;
            if chars.get(*pos) != Some(&')') {
                return None;
            }
            *pos += 1;
        }
        for name in path.into_iter().rev() {
            sub = if name == "*" {
                Mask::All
            } else {
                Mask::Fields(BTreeMap::from([(name, sub)]))
            };
        }
        mask.merge(sub);
        match chars.get(*pos) {
            Some(',') => *pos += 1,
            _ => return Some(mask),
        }
    }
}

/// The fields of a message type of the Spreadsheet resource and each
/// field's own type (`""`: a scalar or a message the emulator does not
/// check). From the REST reference's `Spreadsheet`, `SpreadsheetProperties`,
/// `Sheet`, `SheetProperties`, `GridProperties`, `GridData` and
/// `DimensionProperties`.
fn schema(message: &str) -> Option<&'static [(&'static str, &'static str)]> {
    Some(match message {
        "Spreadsheet" => &[
            ("spreadsheetId", ""),
            ("properties", "SpreadsheetProperties"),
            ("sheets", "Sheet"),
            ("namedRanges", ""),
            ("spreadsheetUrl", ""),
            ("developerMetadata", ""),
            ("dataSources", ""),
            ("dataSourceSchedules", ""),
        ],
        "SpreadsheetProperties" => &[
            ("title", ""),
            ("locale", ""),
            ("autoRecalc", ""),
            ("timeZone", ""),
            ("defaultFormat", ""),
            ("iterativeCalculationSettings", ""),
            ("spreadsheetTheme", ""),
            ("importFunctionsExternalUrlAccessAllowed", ""),
        ],
        "Sheet" => &[
            ("properties", "SheetProperties"),
            ("data", "GridData"),
            ("merges", ""),
            ("conditionalFormats", ""),
            ("filterViews", ""),
            ("protectedRanges", ""),
            ("basicFilter", ""),
            ("charts", ""),
            ("bandedRanges", ""),
            ("developerMetadata", ""),
            ("rowGroups", ""),
            ("columnGroups", ""),
            ("slicers", ""),
            ("tables", ""),
        ],
        "SheetProperties" => &[
            ("sheetId", ""),
            ("title", ""),
            ("index", ""),
            ("sheetType", ""),
            ("gridProperties", "GridProperties"),
            ("hidden", ""),
            ("tabColor", ""),
            ("tabColorStyle", ""),
            ("rightToLeft", ""),
            ("dataSourceSheetProperties", ""),
        ],
        "GridProperties" => &[
            ("rowCount", ""),
            ("columnCount", ""),
            ("frozenRowCount", ""),
            ("frozenColumnCount", ""),
            ("hideGridlines", ""),
            ("rowGroupControlAfter", ""),
            ("columnGroupControlAfter", ""),
        ],
        "GridData" => &[
            ("startRow", ""),
            ("startColumn", ""),
            ("rowData", ""),
            ("rowMetadata", "DimensionProperties"),
            ("columnMetadata", "DimensionProperties"),
        ],
        // Drive v3's File resource and the User it names (owners,
        // lastModifyingUser), from the Drive API reference.
        "File" => &[
            ("kind", ""),
            ("id", ""),
            ("name", ""),
            ("mimeType", ""),
            ("description", ""),
            ("starred", ""),
            ("trashed", ""),
            ("explicitlyTrashed", ""),
            ("trashingUser", "User"),
            ("trashedTime", ""),
            ("parents", ""),
            ("properties", ""),
            ("appProperties", ""),
            ("spaces", ""),
            ("version", ""),
            ("webContentLink", ""),
            ("webViewLink", ""),
            ("iconLink", ""),
            ("hasThumbnail", ""),
            ("thumbnailLink", ""),
            ("thumbnailVersion", ""),
            ("viewedByMe", ""),
            ("viewedByMeTime", ""),
            ("createdTime", ""),
            ("modifiedTime", ""),
            ("modifiedByMeTime", ""),
            ("modifiedByMe", ""),
            ("sharedWithMeTime", ""),
            ("sharingUser", "User"),
            ("owners", "User"),
            ("driveId", ""),
            ("lastModifyingUser", "User"),
            ("shared", ""),
            ("ownedByMe", ""),
            ("capabilities", ""),
            ("viewersCanCopyContent", ""),
            ("copyRequiresWriterPermission", ""),
            ("writersCanShare", ""),
            ("permissions", ""),
            ("permissionIds", ""),
            ("hasAugmentedPermissions", ""),
            ("folderColorRgb", ""),
            ("originalFilename", ""),
            ("fullFileExtension", ""),
            ("fileExtension", ""),
            ("md5Checksum", ""),
            ("sha1Checksum", ""),
            ("sha256Checksum", ""),
            ("size", ""),
            ("quotaBytesUsed", ""),
            ("headRevisionId", ""),
            ("contentHints", ""),
            ("imageMediaMetadata", ""),
            ("videoMediaMetadata", ""),
            ("isAppAuthorized", ""),
            ("exportLinks", ""),
            ("shortcutDetails", ""),
            ("contentRestrictions", ""),
            ("resourceKey", ""),
            ("linkShareMetadata", ""),
            ("labelInfo", ""),
            ("inheritedPermissionsDisabled", ""),
            ("downloadRestrictions", ""),
        ],
        "User" => &[
            ("kind", ""),
            ("displayName", ""),
            ("photoLink", ""),
            ("me", ""),
            ("permissionId", ""),
            ("emailAddress", ""),
        ],
        "DimensionProperties" => &[
            ("hiddenByFilter", ""),
            ("hiddenByUser", ""),
            ("pixelSize", ""),
            ("developerMetadata", ""),
            ("dataSourceColumnReference", ""),
        ],
        _ => return None,
    })
}

/// Whether every field the mask names exists in `message`.
pub(crate) fn valid(mask: &Mask, message: &str) -> bool {
    let Mask::Fields(fields) = mask else {
        return true;
    };
    let Some(known) = schema(message) else {
        return true;
    };
    fields.iter().all(|(name, sub)| {
        known
            .iter()
            .find(|(n, _)| n == name)
            .is_some_and(|(_, ty)| valid(sub, ty))
    })
}

/// The parts of `value` the mask selects (arrays: each element).
pub(crate) fn project(value: &Value, mask: &Mask) -> Value {
    let Mask::Fields(fields) = mask else {
        return value.clone();
    };
    match value {
        Value::Object(object) => Value::Object(
            fields
                .iter()
                .filter_map(|(name, sub)| Some((name.clone(), project(object.get(name)?, sub))))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| project(v, mask)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_select_nested_fields() {
        let value = json!({
            "spreadsheetId": "x",
            "properties": { "title": "T", "locale": "en_US" },
            "sheets": [
                { "properties": { "sheetId": 0, "title": "A", "index": 0 }, "data": [{ "columnMetadata": [1], "rowMetadata": [2] }] },
                { "properties": { "sheetId": 1, "title": "B", "index": 1 } }
            ]
        });
        let cases = [
            ("spreadsheetId", json!({ "spreadsheetId": "x" })),
            (
                "properties.title",
                json!({ "properties": { "title": "T" } }),
            ),
            (
                "sheets.properties(sheetId,title)",
                json!({ "sheets": [
                    { "properties": { "sheetId": 0, "title": "A" } },
                    { "properties": { "sheetId": 1, "title": "B" } }
                ]}),
            ),
            (
                "sheets(properties.title,data.columnMetadata),spreadsheetId",
                json!({ "spreadsheetId": "x", "sheets": [
                    { "properties": { "title": "A" }, "data": [{ "columnMetadata": [1] }] },
                    { "properties": { "title": "B" } }
                ]}),
            ),
            ("*", value.clone()),
        ];
        for (text, expected) in cases {
            let mask = parse(text).expect(text);
            assert!(valid(&mask, "Spreadsheet"), "{text}");
            assert_eq!(project(&value, &mask), expected, "{text}");
        }
        for bad in ["sheets.bogus", "nope", "sheets(properties,bogus)"] {
            assert!(!valid(&parse(bad).expect(bad), "Spreadsheet"), "{bad}");
        }
        for malformed in ["", "a(", "a)", "a..b", "a,,b"] {
            assert!(parse(malformed).is_none(), "{malformed}");
        }
    }
}
