//! A service registry mirrored to a Postgres table: rows another
//! application edits with SQL come in as signed changes, registry edits go
//! out, and a dry run shows the plan first.
//!
//! Run with a server whose URL (with its password) is in an environment
//! variable:
//!
//! ```sh
//! export CHITTYSYNC_PG_URL=postgres://user:password@127.0.0.1:5432/db
//! cargo run -p chittysync-postgres --example postgres_mirror
//! ```

use chittysync::{
    Adapter, AdapterBinding, AuditFilter, FieldDef, FieldKind, MirrorOptions, Replica, Schema, Side,
};
use chittysync_postgres::PostgresAdapter;

const URL_VAR: &str = "CHITTYSYNC_PG_URL";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var(URL_VAR).is_err() {
        return Err(format!("set {URL_VAR} to a Postgres connection URL first").into());
    }
    let dir = tempfile::tempdir()?;
    let replica = Replica::open(dir.path().join("replica.db"))?;
    let schema = Schema::new()
        .field(FieldDef::new("name", FieldKind::Text).required())
        .field(FieldDef::new("port", FieldKind::Integer));
    let services = replica.create_registry("services", schema.clone())?;
    services.put(Some("billing"), [("name", "billing")])?;

    // The binding stores the variable's name, never the URL or password.
    let table = format!("example_{}.services", std::process::id());
    let binding = AdapterBinding::new("pg", "services", "postgres", &table)
        .secret_env(URL_VAR)
        .key_field("name");
    let added = replica.add_binding(&binding)?;
    let pg = PostgresAdapter::for_binding(&binding, &schema, "example").await?;
    pg.prepare(true).await?; // create the table, install change tracking

    let plan = replica
        .run_mirror("pg", &pg, &MirrorOptions::sync().dry_run(), &())
        .await?
        .plan;
    println!(
        "dry run: {} row(s) to create in Postgres",
        plan.count(Side::Remote, chittysync::Action::Create)
    );
    replica
        .run_mirror("pg", &pg, &MirrorOptions::sync(), &())
        .await?;

    // Another application edits the table with plain SQL.
    let (sql, conn) =
        tokio_postgres::connect(&std::env::var(URL_VAR)?, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    sql.batch_execute(&format!(
        "UPDATE {table} SET port = 8080 WHERE name = 'billing';
         INSERT INTO {table} (id, name, port) VALUES ('ledger', 'ledger', 9000)"
    ))
    .await?;
    let report = replica
        .run_mirror("pg", &pg, &MirrorOptions::sync(), &())
        .await?;
    println!("pulled {} row(s)", report.applied);
    for record in services.list(&chittysync::Query::all()) {
        println!("{}", record.to_json());
    }
    // What came from Postgres is signed by the binding's own key.
    let last = services.audit(&AuditFilter::all().record("ledger"))?;
    assert_eq!(last[0].author, added.key);
    println!(
        "signed by the binding: {}",
        last[0].message.clone().unwrap_or_default()
    );

    sql.batch_execute(&format!(
        "DROP SCHEMA example_{} CASCADE",
        std::process::id()
    ))
    .await?;
    Ok(())
}
