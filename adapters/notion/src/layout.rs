//! The layout: the data source a database id leads to, its properties, and
//! which property each mapped field lives in (ids first, then names).

use reqwest::Method;
use serde_json::{Value as Json, json};

use chittysync::{AdapterError, ChangeTracking, ColumnSpec, FieldKind, RemoteColumn, RemoteTable};

use crate::NotionAdapter;

/// Property types Notion computes: read, never written.
const READ_ONLY: &[&str] = &[
    "formula",
    "rollup",
    "created_time",
    "last_edited_time",
    "created_by",
    "last_edited_by",
    "unique_id",
];

/// A property of the data source.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Prop {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) kind: String,
    /// Status options (which the API cannot create).
    pub(crate) status_options: Vec<String>,
    /// The data source a relation points to.
    pub(crate) relation_target: Option<String>,
}

impl Prop {
    pub(crate) fn read_only(&self) -> bool {
        READ_ONLY.contains(&self.kind.as_str())
    }
}

/// The data source as resolved against the spec.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub(crate) data_source_id: String,
    data_source_name: String,
    pub(crate) id_prop: Prop,
    pub(crate) mapped: Vec<(ColumnSpec, Prop)>,
    pub(crate) all: Vec<Prop>,
}

/// Whether a field of type `ft` can live in a property of type `kind`.
fn compatible(ft: FieldKind, kind: &str) -> bool {
    let ok: &[&str] = match ft {
        FieldKind::Text => &["title", "rich_text", "phone_number"],
        FieldKind::LongText => &["title", "rich_text"],
        FieldKind::Integer | FieldKind::Decimal => &["number"],
        FieldKind::Bool => &["checkbox"],
        FieldKind::Date | FieldKind::Datetime => &["date"],
        FieldKind::Select => &["select", "status"],
        FieldKind::MultiSelect => &["multi_select", "relation", "people"],
        FieldKind::Url => &["url", "rich_text", "title"],
        FieldKind::Email => &["email", "rich_text", "title"],
        FieldKind::Reference => &["relation", "rich_text"],
        FieldKind::Json => &["rich_text"],
        // A kind this adapter does not know yet fits no property.
        _ => &[],
    };
    ok.contains(&kind)
}

/// The property type a missing mapped field gets when prepare creates it.
fn created_kind(c: &ColumnSpec, data_source: &str) -> Json {
    let options = |opts: &[String]| -> Json {
        opts.iter()
            .filter(|o| !o.contains(','))
            .map(|o| json!({"name": o}))
            .collect()
    };
    match c.field_type {
        FieldKind::Integer | FieldKind::Decimal => json!({"number": {}}),
        FieldKind::Bool => json!({"checkbox": {}}),
        FieldKind::Date | FieldKind::Datetime => json!({"date": {}}),
        FieldKind::Select => json!({"select": {"options": options(&c.options)}}),
        FieldKind::MultiSelect => json!({"multi_select": {"options": options(&c.options)}}),
        FieldKind::Url => json!({"url": {}}),
        FieldKind::Email => json!({"email": {}}),
        FieldKind::Reference => {
            json!({"relation": {"data_source_id": data_source, "single_property": {}}})
        }
        _ => json!({"rich_text": {}}),
    }
}

/// Parses the `properties` object of a data source.
fn parse_props(ds: &Json) -> Vec<Prop> {
    let mut props: Vec<Prop> = ds
        .get("properties")
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .map(|(name, p)| {
                    let kind = p
                        .get("type")
                        .and_then(Json::as_str)
                        .unwrap_or("")
                        .to_owned();
                    let status_options = p
                        .pointer("/status/options")
                        .and_then(Json::as_array)
                        .map(|o| {
                            o.iter()
                                .filter_map(|o| o.get("name").and_then(Json::as_str))
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default();
                    let relation_target = p
                        .pointer("/relation/data_source_id")
                        .and_then(Json::as_str)
                        .map(str::to_owned);
                    Prop {
                        id: p
                            .get("id")
                            .and_then(Json::as_str)
                            .unwrap_or(name)
                            .to_owned(),
                        name: p
                            .get("name")
                            .and_then(Json::as_str)
                            .unwrap_or(name)
                            .to_owned(),
                        kind,
                        status_options,
                        relation_target,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    props.sort_by(|a, b| a.name.cmp(&b.name));
    props
}

/// A property by id first, then by name.
fn find_prop<'p>(props: &'p [Prop], key: &str) -> Option<&'p Prop> {
    props
        .iter()
        .find(|p| p.id == key)
        .or_else(|| props.iter().find(|p| p.name == key))
}

impl NotionAdapter {
    /// The data source and its properties, checked against the spec.
    /// `create` adds a missing id property and missing mapped properties.
    /// Cached after the first success unless `refresh`.
    pub(crate) async fn layout(&self, create: bool, refresh: bool) -> Result<Layout, AdapterError> {
        if !refresh && let Some(layout) = &self.state.lock().await.layout {
            return Ok(layout.clone());
        }
        let (ds_id, ds_name) = self.data_source().await?;
        let mut props = self.read_props(&ds_id).await?;
        if create && self.add_missing_props(&props, &ds_id).await? {
            props = self.read_props(&ds_id).await?;
        }
        let id_prop = find_prop(&props, &self.options.id_property)
            .cloned()
            .ok_or_else(|| {
                self.mismatch(format!(
                    "data source '{ds_name}' has no property '{}' for the record ids; add a Text (rich_text) property named '{}' in Notion, or have the binding create it",
                    self.options.id_property, self.options.id_property
                ))
            })?;
        if id_prop.kind != "rich_text" {
            return Err(self.mismatch(format!(
                "the record-id property '{}' is a {} property; it must be Text (rich_text)",
                id_prop.name, id_prop.kind
            )));
        }
        let mut mapped = Vec::new();
        let mut problems = Vec::new();
        for c in &self.spec.columns {
            let Some(p) = find_prop(&props, &c.column) else {
                problems.push(format!(
                    "field '{}' maps to property '{}', which data source '{ds_name}' does not have; add a {} property or map the field to another property (--map FIELD=PROPERTY)",
                    c.field,
                    c.column,
                    created_kind(c, &ds_id)
                        .as_object()
                        .and_then(|o| o.keys().next().cloned())
                        .unwrap_or_default()
                ));
                continue;
            };
            if p.read_only() {
                if !self.options.pull_only {
                    problems.push(format!(
                        "field '{}' maps to property '{}', a {} property Notion computes and nobody can write; make the binding pull-only or map the field to another property",
                        c.field, p.name, p.kind
                    ));
                    continue;
                }
            } else if !compatible(c.field_type, &p.kind) {
                problems.push(format!(
                    "field '{}' ({}) cannot live in property '{}', a {} property; map it to a property of a fitting type",
                    c.field, c.field_type, p.name, p.kind
                ));
                continue;
            } else if p.kind == "relation"
                && c.field_type == FieldKind::Reference
                && p.relation_target.as_deref().is_some_and(|t| t != ds_id)
            {
                problems.push(format!(
                    "field '{}' (reference) maps to relation '{}', which points to another data source; a reference needs a relation to this data source",
                    c.field, p.name
                ));
                continue;
            }
            mapped.push((c.clone(), p.clone()));
        }
        if !problems.is_empty() {
            return Err(self.mismatch(problems.join("; ")));
        }
        let layout = Layout {
            data_source_id: ds_id,
            data_source_name: ds_name,
            id_prop,
            mapped,
            all: props,
        };
        self.state.lock().await.layout = Some(layout.clone());
        Ok(layout)
    }

    /// The data source of the database: the one named by the
    /// `data_source` setting (id or name), else the only one. Returns its
    /// id and name.
    async fn data_source(&self) -> Result<(String, String), AdapterError> {
        let db = &self.options.database_id;
        let database = self
            .call(Method::GET, &format!("/v1/databases/{db}"), None, true)
            .await
            .map_err(|e| self.request_error("reading the database", &e))?;
        let sources: Vec<(String, String)> = database
            .get("data_sources")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|d| {
                        let id = d.get("id")?.as_str()?.to_owned();
                        let name = d
                            .get("name")
                            .and_then(Json::as_str)
                            .unwrap_or("")
                            .to_owned();
                        Some((id, name))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let listed = || {
            sources
                .iter()
                .map(|(id, name)| format!("'{name}' ({id})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.options.data_source {
            Some(want) => sources
                .iter()
                .find(|(id, _)| id == want || id.replace('-', "") == want.replace('-', ""))
                .or_else(|| sources.iter().find(|(_, name)| name == want))
                .cloned()
                .ok_or_else(|| {
                    self.mismatch(format!(
                        "the database has no data source '{want}'; its data sources: {}",
                        listed()
                    ))
                }),
            None => match sources.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(self.mismatch("the database has no data source".into())),
                _ => Err(self.mismatch(format!(
                    "the database has several data sources ({}); choose one with the setting data_source=ID or NAME",
                    listed()
                ))),
            },
        }
    }

    /// With `create`: adds the id property and mapped properties the data
    /// source lacks. Whether any were added.
    async fn add_missing_props(&self, props: &[Prop], ds_id: &str) -> Result<bool, AdapterError> {
        let mut add = serde_json::Map::new();
        if find_prop(props, &self.options.id_property).is_none() {
            add.insert(self.options.id_property.clone(), json!({"rich_text": {}}));
        }
        for c in &self.spec.columns {
            if find_prop(props, &c.column).is_none() && !add.contains_key(&c.column) {
                add.insert(c.column.clone(), created_kind(c, ds_id));
            }
        }
        if add.is_empty() {
            return Ok(false);
        }
        self.call(
            Method::PATCH,
            &format!("/v1/data_sources/{ds_id}"),
            Some(&json!({"properties": add})),
            false,
        )
        .await
        .map_err(|e| self.request_error("adding properties to the data source", &e))?;
        Ok(true)
    }

    async fn read_props(&self, ds: &str) -> Result<Vec<Prop>, AdapterError> {
        let source = self
            .call(Method::GET, &format!("/v1/data_sources/{ds}"), None, true)
            .await
            .map_err(|e| self.request_error("reading the data source's schema", &e))?;
        Ok(parse_props(&source))
    }

    pub(crate) fn remote_table(&self, layout: &Layout) -> RemoteTable {
        RemoteTable {
            name: format!("{} ({})", layout.data_source_name, layout.data_source_id),
            columns: layout
                .all
                .iter()
                .map(|p| RemoteColumn {
                    name: p.name.clone(),
                    type_name: p.kind.clone(),
                })
                .collect(),
            change_tracking: ChangeTracking::Incremental,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_and_property_types_pair_as_documented() {
        assert!(compatible(FieldKind::Text, "title"));
        assert!(compatible(FieldKind::Text, "rich_text"));
        assert!(!compatible(FieldKind::Text, "number"));
        assert!(compatible(FieldKind::Integer, "number"));
        assert!(!compatible(FieldKind::Bool, "rich_text"));
        assert!(compatible(FieldKind::Select, "status"));
        assert!(compatible(FieldKind::Reference, "relation"));
        assert!(!compatible(FieldKind::Json, "number"));
    }

    #[test]
    fn properties_are_found_by_id_before_name() {
        let props = parse_props(&json!({"properties": {
            "Name": {"id": "title", "name": "Name", "type": "title", "title": {}},
            "abc": {"id": "x1", "name": "abc", "type": "rich_text", "rich_text": {}},
            "Other": {"id": "abc", "name": "Other", "type": "number", "number": {}},
        }}));
        assert_eq!(find_prop(&props, "abc").unwrap().name, "Other");
        assert_eq!(find_prop(&props, "Name").unwrap().id, "title");
        assert!(find_prop(&props, "missing").is_none());
    }
}
