//! IANA time zones from the system's TZif files (`/usr/share/zoneinfo`),
//! for date writes that name a `time_zone`. Past the file's last
//! transition the last offset holds.

fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[..8].try_into().unwrap_or([0; 8]))
}

fn be_u32(b: &[u8]) -> usize {
    u32::from_be_bytes(b[..4].try_into().unwrap_or([0; 4])) as usize
}

/// The zone's UTC offset in seconds at `utc` (seconds since the epoch), or
/// `None` for an unknown zone.
pub(super) fn offset_at(zone: &str, utc: i64) -> Option<i64> {
    let safe = !zone.is_empty()
        && !zone.contains("..")
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c));
    if !safe {
        return None;
    }
    let data = std::fs::read(format!("/usr/share/zoneinfo/{zone}")).ok()?;
    if data.len() < 44 || &data[..4] != b"TZif" || data[4] < b'2' {
        return None;
    }
    let counts = |h: &[u8]| -> [usize; 6] {
        let mut c = [0; 6];
        for (i, v) in c.iter_mut().enumerate() {
            *v = be_u32(&h[20 + 4 * i..]);
        }
        c
    };
    let [isut, isstd, leap, time, typ, chars] = counts(&data);
    let v1 = time * 5 + typ * 6 + chars + leap * 8 + isstd + isut;
    let h2 = data.get(44 + v1..)?;
    if h2.len() < 44 {
        return None;
    }
    let [_, _, _, time, typ, _] = counts(h2);
    let body = &h2[44..];
    let trans = body.get(..time * 8)?;
    let idx = body.get(time * 8..time * 9)?;
    let types = body.get(time * 9..time * 9 + typ * 6)?;
    let n = (0..time)
        .take_while(|i| be_i64(&trans[i * 8..]) <= utc)
        .count();
    let t = if n == 0 { 0 } else { usize::from(idx[n - 1]) };
    let off = types.get(t * 6..t * 6 + 4)?;
    Some(i64::from(i32::from_be_bytes(off.try_into().ok()?)))
}

/// The UTC instant (seconds) of a wall-clock time (seconds, as if UTC) in
/// `zone`.
pub(super) fn local_to_utc(zone: &str, local: i64) -> Option<i64> {
    let first = offset_at(zone, local)?;
    let second = offset_at(zone, local - first)?;
    Some(local - second)
}
