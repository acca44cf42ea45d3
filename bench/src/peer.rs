//! Benchmark: peer sync over loopback TCP against plain Automerge's sync
//! protocol between in-memory documents, for the same histories.
//!
//! - `full`: a registry's whole history to a new peer — bytes on the wire
//!   (Noise framing, signed envelopes, a key and signature per change
//!   included) ÷ Automerge sync-message bytes, and time ÷ in-memory sync.
//! - `hub`: peers each write one record, then sync twice through one hub —
//!   total bytes ÷ the same rounds of plain Automerge sync per pair.
//! - `incremental`: one changed record in a large registry — time and bytes,
//!   at two registry sizes, to show they do not grow with the size.

use std::path::Path;
use std::time::Instant;

use automerge::sync::{Message, State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc};
use chittysync::{Identity, Peer, PeerOptions, PeerReport, Replica, Role, ServeOptions};
use serde_json::json;

use crate::data::{self, Payload, REGISTRY};
use crate::measure::{Pairs, interleave, median};
use crate::report::{Figure, Goal, Unit};
use crate::{Options, Result};

/// Per change, what peer sync adds beyond Automerge: the author's key and
/// signature.
const SIGNATURE_BYTES: usize = 96;

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// A pair of plain Automerge sync states that persist across rounds.
#[derive(Default)]
struct PlainLink {
    ours: State,
    theirs: State,
}

/// Plain Automerge sync until neither side has anything to say; returns
/// the bytes of all messages. `whole_doc` lets Automerge send the whole
/// document in one message to a peer that has nothing (its v2 messages);
/// otherwise changes travel one by one, as in peer sync.
fn plain_sync(
    a: &mut AutoCommit,
    b: &mut AutoCommit,
    link: &mut PlainLink,
    whole_doc: bool,
) -> Result<usize> {
    /// One side's turn: `from` tells `to` what it has to say, if anything.
    fn turn(
        from: &mut AutoCommit,
        to: &mut AutoCommit,
        from_state: &mut State,
        to_state: &mut State,
        whole_doc: bool,
    ) -> Result<Option<usize>> {
        if !whole_doc {
            from_state.their_capabilities = None;
        }
        let Some(m) = from.sync().generate_sync_message(from_state) else {
            return Ok(None);
        };
        let encoded = m.encode();
        to.sync()
            .receive_sync_message(to_state, Message::decode(&encoded)?)?;
        Ok(Some(encoded.len()))
    }
    let mut bytes = 0;
    for _ in 0..10_000 {
        let one = turn(a, b, &mut link.ours, &mut link.theirs, whole_doc)?;
        let two = turn(b, a, &mut link.theirs, &mut link.ours, whole_doc)?;
        if one.is_none() && two.is_none() {
            if a.get_heads() != b.get_heads() {
                return Err("plain sync ended with different heads".into());
            }
            return Ok(bytes);
        }
        bytes += one.unwrap_or(0) + two.unwrap_or(0);
    }
    Err("plain sync did not converge".into())
}

fn wire_bytes(report: &PeerReport) -> usize {
    (report.bytes_sent + report.bytes_received) as usize
}

pub(crate) fn run(options: &Options) -> Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let rt = runtime()?;
    let mut figures = full(options, dir.path(), &rt)?;
    figures.extend(hub(options, dir.path(), &rt)?);
    figures.extend(incremental(options, dir.path(), &rt)?);
    Ok(figures)
}

/// The whole history to a peer that has nothing.
fn full(options: &Options, dir: &Path, rt: &tokio::runtime::Runtime) -> Result<Vec<Figure>> {
    let changes = options.pick(2_000, 40);
    let hub = Replica::open(dir.join("full-hub.db"))?;
    let client_seed = [7u8; 32];
    let client_key = Identity::from_secret_bytes(client_seed).public_key();
    let registry = hub.create_registry(REGISTRY, data::schema())?;
    registry.set_member(client_key, Role::Writer)?;
    for i in 0..changes {
        data::write_batch(&registry, &Payload::batch(i, 1))?;
    }
    let history = registry.change_count();
    let mut plain = AutoCommit::new();
    plain.apply_changes(data::raw_changes(registry.export(&[])?.changes())?)?;
    let server = rt.block_on(hub.serve("127.0.0.1:0", ServeOptions::default()))?;
    let peer = Peer::new(server.local_addr().to_string()).with_key(hub.public_key());

    let (mut ours_bytes, mut base_bytes) = (Vec::new(), Vec::new());
    let pairs: Pairs = interleave(
        1,
        options.pick(5, 2),
        |i| {
            let client = Replica::open_with_identity(
                dir.join(format!("full-client-{i}.db")),
                Identity::from_secret_bytes(client_seed),
            )?;
            let started = Instant::now();
            let report = rt.block_on(client.sync_peer(&peer, &PeerOptions::default()))?;
            let took = started.elapsed();
            if client.registry(REGISTRY)?.heads() != registry.heads() {
                return Err("the client did not converge".into());
            }
            ours_bytes.push(wire_bytes(&report) as f64);
            Ok(took)
        },
        |_| {
            let mut a = plain.clone();
            let mut b = AutoCommit::new();
            let started = Instant::now();
            let bytes = plain_sync(&mut a, &mut b, &mut PlainLink::default(), false)?;
            let took = started.elapsed();
            base_bytes.push(bytes as f64);
            Ok(took)
        },
    )?;
    let whole_doc = plain_sync(
        &mut plain.clone(),
        &mut AutoCommit::new(),
        &mut PlainLink::default(),
        true,
    )?;
    let (ours, base) = (median(&ours_bytes), median(&base_bytes));
    let stripped = ours - (SIGNATURE_BYTES * history) as f64;
    let case = format!("full history of {history} changes to a new peer");
    Ok(vec![
        Figure::time(
            "sync",
            format!("{case}: time, loopback TCP vs in-memory"),
            &pairs,
            Some(Goal::AtMost(1.3)),
            "ours: Noise handshake, signed envelopes, every signature, actor and role verified, durable commit; baseline: Automerge sync in memory, nothing verified or stored",
        ),
        Figure {
            bench: "sync",
            case: format!("{case}: bytes on the wire"),
            unit: Unit::Bytes,
            ours,
            baseline: Some(base),
            ratio: Some(ours / base),
            goal: None,
            samples: ours_bytes.len(),
            note: format!(
                "baseline: Automerge sync messages, changes one by one; Automerge's whole-document message would be {whole_doc} B"
            ),
            extra: json!({ "whole_document_bytes": whole_doc }),
        },
        Figure {
            bench: "sync",
            case: format!("{case}: bytes less {SIGNATURE_BYTES} B key+signature per change"),
            unit: Unit::Bytes,
            ours: stripped,
            baseline: Some(base),
            ratio: Some(stripped / base),
            goal: Some(Goal::AtMost(1.05)),
            samples: ours_bytes.len(),
            note: "what peer sync adds beyond signatures: Noise framing and tags, envelopes, hello"
                .into(),
            extra: json!({}),
        },
    ])
}

/// Peers each write one record, then sync twice through one hub.
fn hub(options: &Options, dir: &Path, rt: &tokio::runtime::Runtime) -> Result<Vec<Figure>> {
    let n = options.pick(100, 4);
    let hub = Replica::open(dir.join("hub.db"))?;
    let registry = hub.create_registry(REGISTRY, data::schema())?;
    let peers: Vec<Replica> = (0..n)
        .map(|i| Replica::open(dir.join(format!("hub-peer-{i}.db"))))
        .collect::<std::result::Result<_, _>>()?;
    for p in &peers {
        registry.set_member(p.public_key(), Role::Writer)?;
    }
    let server = rt.block_on(hub.serve("127.0.0.1:0", ServeOptions::default()))?;
    let peer = Peer::new(server.local_addr().to_string()).with_key(hub.public_key());
    let sync = |p: &Replica| rt.block_on(p.sync_peer(&peer, &PeerOptions::default()));
    for p in &peers {
        sync(p)?;
    }
    // Baseline: the same documents and rounds with plain Automerge.
    let mut plain_hub = AutoCommit::new();
    plain_hub.apply_changes(data::raw_changes(registry.export(&[])?.changes())?)?;
    let mut plain_peers: Vec<(AutoCommit, PlainLink)> = (0..n)
        .map(|_| (AutoCommit::new(), PlainLink::default()))
        .collect();
    for (doc, link) in &mut plain_peers {
        plain_sync(doc, &mut plain_hub, link, false)?;
    }

    let started = Instant::now();
    let (mut ours, mut moved) = (0, 0);
    for (i, p) in peers.iter().enumerate() {
        data::write_batch(&p.registry(REGISTRY)?, &Payload::batch(1_000_000 + i, 1))?;
    }
    for _ in 0..2 {
        for p in &peers {
            let report = sync(p)?;
            ours += wire_bytes(&report);
            moved += report.changes_in() + report.changes_out();
        }
    }
    let ours_time = started.elapsed();
    for p in &peers {
        if p.registry(REGISTRY)?.heads() != registry.heads() {
            return Err("a peer did not converge through the hub".into());
        }
    }

    let started = Instant::now();
    let mut base = 0;
    for (i, (doc, _)) in plain_peers.iter_mut().enumerate() {
        let records = match doc.get(automerge::ROOT, "records")? {
            Some((_, obj)) => obj,
            None => return Err("the plain document has no records map".into()),
        };
        let rec = doc.put_object(&records, format!("plain-{i}"), ObjType::Map)?;
        doc.put(&rec, "name", format!("service-{i}"))?;
        doc.commit();
    }
    for _ in 0..2 {
        for (doc, link) in &mut plain_peers {
            base += plain_sync(doc, &mut plain_hub, link, false)?;
        }
    }
    let base_time = started.elapsed();

    Ok(vec![
        Figure {
            bench: "sync",
            case: format!("{n} peers through one hub, 1 write each, 2 rounds: total bytes"),
            unit: Unit::Bytes,
            ours: ours as f64,
            baseline: Some(base as f64),
            ratio: Some(ours as f64 / base as f64),
            goal: Some(Goal::AtMost(1.2)),
            samples: 1,
            note: "baseline: the same rounds of plain Automerge sync per peer–hub pair, in memory".into(),
            extra: json!({}),
        },
        Figure {
            bench: "sync",
            case: format!(
                "{n} peers through one hub, 1 write each, 2 rounds: bytes less {SIGNATURE_BYTES} B key+signature per change"
            ),
            unit: Unit::Bytes,
            ours: (ours - SIGNATURE_BYTES * moved) as f64,
            baseline: Some(base as f64),
            ratio: Some((ours - SIGNATURE_BYTES * moved) as f64 / base as f64),
            goal: None,
            samples: 1,
            note: format!(
                "{moved} changes moved; the rest is one handshake, hello and envelopes per connection"
            ),
            extra: json!({ "changes_moved": moved }),
        },
        Figure {
            bench: "sync",
            case: format!("{n} peers through one hub, 1 write each, 2 rounds: time"),
            unit: Unit::Seconds,
            ours: ours_time.as_secs_f64(),
            baseline: Some(base_time.as_secs_f64()),
            ratio: Some(ours_time.as_secs_f64() / base_time.as_secs_f64()),
            goal: None,
            samples: 1,
            note: "ours: a TCP connection, handshake and durable commits per round; baseline in memory".into(),
            extra: json!({}),
        },
    ])
}

/// One changed record in a registry of growing size.
fn incremental(options: &Options, dir: &Path, rt: &tokio::runtime::Runtime) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let big = options.records;
    for size in [big / 10, big] {
        let hub = Replica::open(dir.join(format!("inc-hub-{size}.db")))?;
        let client = Replica::open(dir.join(format!("inc-client-{size}.db")))?;
        let registry = hub.create_registry(REGISTRY, data::schema())?;
        registry.set_member(client.public_key(), Role::Writer)?;
        let batch = data::BATCH.min(size);
        for first in (0..size).step_by(batch) {
            data::write_batch(&registry, &Payload::batch(first, batch.min(size - first)))?;
        }
        let server = rt.block_on(hub.serve("127.0.0.1:0", ServeOptions::default()))?;
        let peer = Peer::new(server.local_addr().to_string()).with_key(hub.public_key());
        rt.block_on(client.sync_peer(&peer, &PeerOptions::default()))?;
        let (mut times, mut bytes) = (Vec::new(), Vec::new());
        for k in 0..options.pick(7, 2) {
            data::write_batch(&registry, &Payload::batch(size + k, 1))?;
            let started = Instant::now();
            let report = rt.block_on(client.sync_peer(&peer, &PeerOptions::default()))?;
            times.push(started.elapsed().as_secs_f64());
            bytes.push(wire_bytes(&report) as f64);
            if report.changes_in() != 1 {
                return Err(format!("expected 1 change in, got {}", report.changes_in()).into());
            }
        }
        let case = format!("1 changed record in {size} records");
        figures.push(Figure::absolute(
            "sync",
            format!("{case}: time"),
            Unit::Seconds,
            median(&times),
            times.len(),
            "TCP connect, handshake, one registry, one signed change verified and committed",
        ));
        figures.push(Figure::absolute(
            "sync",
            format!("{case}: bytes"),
            Unit::Bytes,
            median(&bytes),
            bytes.len(),
            "both directions, handshake included; does not grow with the registry",
        ));
    }
    Ok(figures)
}
