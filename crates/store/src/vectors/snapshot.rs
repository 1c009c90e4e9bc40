//! The vector index kept on disk beside the SQLite file (`<file>-vectors`), so that a start
//! loads the index from one sequential read of its codes instead of decoding and quantising
//! every stored vector (at 100k memories about 40 ms instead of about 400 ms, the wait of a
//! search sent the moment a server answers `initialize`).
//!
//! The file is a cache, never a source of truth. What it cannot spoil:
//! - Every candidate the scan proposes is checked against the database and rescored from
//!   its stored vector, so a wrong file can cost recall, never return a stale, filtered or
//!   foreign memory.
//! - It is used only when the vector it holds with the highest `seq` is still that row of
//!   the database, quantised to the same codes: a file from another database, or from
//!   before a restore, is not. Rows written since are read as a running index reads them
//!   (`seq` past the file's), and removals since are dropped at the recount or at the check.
//! - Anything malformed (a bad checksum, a length past the end, a name number out of range,
//!   a memory twice) makes the whole file unusable: the index loads from the database.
//!
//! Layout, little-endian: `MAGIC`, dims `u32`, the model id (`u32` length, bytes), the last
//! `seq` read `i64`, the slot count `u64`, the names (`u32` count, then `u32` length and
//! bytes each; a name's number is its position from 1), then per slot in columns: `seq`
//! `i64`, memory rowid `i64`, scale `f32`, facets (five name numbers `u32`, `created_at`
//! `i64`, flags `u8`), and the codes, `dims` bytes per slot; last, a checksum `u64` of
//! everything before it.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{Facets, Names, Slots, code_sum};

const MAGIC: &[u8; 8] = b"HVVECIX1";

/// Bytes per slot besides its codes: seq, rowid, scale, five names, created_at, flags.
const SLOT_BYTES: usize = 8 + 8 + 4 + 5 * 4 + 8 + 1;
const RESTRICTED: u8 = 1;
const LIVE: u8 = 2;

/// Where the index of the SQLite file at `database` is kept.
pub(crate) fn path_beside(database: &Path) -> PathBuf {
    let mut path = database.as_os_str().to_os_string();
    path.push("-vectors");
    PathBuf::from(path)
}

/// Why a file was not used (logged, then the index loads from the database).
#[derive(Debug)]
pub(crate) struct Unusable(pub(crate) String);

impl From<io::Error> for Unusable {
    fn from(error: io::Error) -> Self {
        Self(error.to_string())
    }
}

/// Writes the slots of `slots` that `keep` keeps, as read up to `last_seq`, to a temporary
/// file beside `path`, streamed (no copy of the index in memory): done under the index's
/// read lock, while the slower flush to disk and the rename are [`Pending::commit`]'s,
/// after it. Only the names those slots use are written, numbered again from 1.
pub(crate) fn write(
    path: &Path,
    model_id: &str,
    dims: usize,
    slots: &Slots,
    last_seq: i64,
    keep: impl Fn(usize) -> bool,
) -> io::Result<Pending> {
    let live: Vec<usize> = (0..slots.seqs.len())
        .filter(|&slot| slots.seqs[slot] != 0 && keep(slot))
        .collect();
    let mut name_of: Vec<&str> = vec![""; slots.names.numbers.len() + 1];
    for (name, &number) in &slots.names.numbers {
        if let Some(entry) = name_of.get_mut(number as usize) {
            *entry = name;
        }
    }
    // Old number -> new number (0: not used by a written slot, or none).
    let mut renumbered = vec![0u32; name_of.len()];
    let mut names: Vec<&str> = Vec::new();
    let mut renumber = |number: u32| -> u32 {
        let Some(slot) = renumbered.get_mut(number as usize).filter(|_| number != 0) else {
            return 0;
        };
        if *slot == 0 {
            names.push(name_of[number as usize]);
            *slot = u32_of(names.len());
        }
        *slot
    };
    let facets: Vec<Facets> = live
        .iter()
        .map(|&slot| {
            let f = slots.facets[slot];
            Facets {
                user: renumber(f.user),
                category: renumber(f.category),
                project: renumber(f.project),
                machine: renumber(f.machine),
                agent: renumber(f.agent),
                ..f
            }
        })
        .collect();
    let memory_of: HashMap<usize, i64> = slots
        .slot_of_memory
        .iter()
        .map(|(&rowid, &slot)| (slot, rowid))
        .collect();

    let mut temporary = path.as_os_str().to_os_string();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let mut pending = Pending {
        temporary: PathBuf::from(temporary),
        file: None,
        written: live.len(),
    };
    // Made 0600, or tightened if a crashed writer of the same pid left one behind.
    haivemind_core::private_files::ensure_private_file(&pending.temporary)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&pending.temporary)?;
    let mut out = Summing {
        inner: io::BufWriter::with_capacity(1 << 20, file),
        sum: Checksum::default(),
    };
    out.write_all(MAGIC)?;
    out.write_all(&u32_of(dims).to_le_bytes())?;
    out.write_all(&u32_of(model_id.len()).to_le_bytes())?;
    out.write_all(model_id.as_bytes())?;
    out.write_all(&last_seq.to_le_bytes())?;
    out.write_all(&(live.len() as u64).to_le_bytes())?;
    out.write_all(&u32_of(names.len()).to_le_bytes())?;
    for name in &names {
        out.write_all(&u32_of(name.len()).to_le_bytes())?;
        out.write_all(name.as_bytes())?;
    }
    for &slot in &live {
        out.write_all(&slots.seqs[slot].to_le_bytes())?;
    }
    for &slot in &live {
        out.write_all(&memory_of.get(&slot).copied().unwrap_or(0).to_le_bytes())?;
    }
    for &slot in &live {
        out.write_all(&slots.scales[slot].to_le_bytes())?;
    }
    for facets in &facets {
        for number in [
            facets.user,
            facets.category,
            facets.project,
            facets.machine,
            facets.agent,
        ] {
            out.write_all(&number.to_le_bytes())?;
        }
        out.write_all(&facets.created_at_ms.to_le_bytes())?;
        let restricted = if facets.restricted { RESTRICTED } else { 0 };
        let live = if facets.live { LIVE } else { 0 };
        out.write_all(&[restricted | live])?;
    }
    let mut bytes = vec![0u8; dims];
    for &slot in &live {
        for (byte, &code) in bytes
            .iter_mut()
            .zip(&slots.codes[slot * dims..(slot + 1) * dims])
        {
            *byte = code as u8;
        }
        out.write_all(&bytes)?;
    }
    let sum = out.sum.finish();
    let mut inner = out.inner;
    inner.write_all(&sum.to_le_bytes())?;
    pending.file = Some(inner.into_inner().map_err(io::IntoInnerError::into_error)?);
    Ok(pending)
}

/// A file written but not yet in place: [`Pending::commit`] flushes it to disk and renames
/// it over the old one, so a reader sees the old file or the new one, never a part.
/// Dropped uncommitted, it is removed. Owner-only (0600), like the database: it holds user,
/// project and agent names.
pub(crate) struct Pending {
    temporary: PathBuf,
    file: Option<std::fs::File>,
    /// How many slots it holds.
    pub(crate) written: usize,
}

impl Pending {
    pub(crate) fn commit(mut self, path: &Path) -> io::Result<()> {
        if let Some(file) = self.file.take() {
            file.sync_all()?;
        }
        std::fs::rename(&self.temporary, path)?;
        self.temporary = PathBuf::new();
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.temporary.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// Names and the number of slots never exceed `u32` in an index (slots are `u32` in the
/// scan); saturating keeps a writer from panicking on an impossible size.
fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A file's slots, before the database vouches for them.
pub(crate) struct Loaded {
    pub(crate) slots: Slots,
    /// The slot with the highest `seq` and its memory's rowid, to compare with the
    /// database's row.
    pub(crate) newest: Option<(usize, i64)>,
}

/// Reads the file at `path` into slots for `model_id` with `dims` dimensions, streamed
/// (the codes are read straight into the index's own buffer); refuses any file that is not
/// exactly what [`write`] writes.
pub(crate) fn read(path: &Path, model_id: &str, dims: usize) -> Result<Loaded, Unusable> {
    let file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    let body_length = length
        .checked_sub(8)
        .ok_or_else(|| Unusable("shorter than its checksum".into()))?;
    let mut input = Input {
        inner: io::BufReader::with_capacity(1 << 20, file),
        sum: Checksum::default(),
        left: body_length,
    };
    if input.take(MAGIC.len())? != MAGIC {
        return Err(Unusable("not a vector index file".into()));
    }
    let file_dims = input.u32()? as usize;
    let model_length = input.u32()? as usize;
    let file_model = input.take(model_length)?;
    if file_dims != dims || file_model != model_id.as_bytes() {
        return Err(Unusable("made for another model".into()));
    }
    let last_seq = input.i64()?;
    let count =
        usize::try_from(input.u64()?).map_err(|_| Unusable("slot count out of range".into()))?;
    let name_count = input.u32()? as usize;
    // Every name is at least its 4-byte length, every slot SLOT_BYTES + dims: checked
    // against what is left of the file before anything is allocated for them.
    let left = usize::try_from(input.left).unwrap_or(usize::MAX);
    if name_count > left / 4 || count > left / (SLOT_BYTES + dims) {
        return Err(Unusable("counts past the end of the file".into()));
    }
    let mut names = Names::default();
    for position in 1..=name_count {
        let length = input.u32()? as usize;
        let name = String::from_utf8(input.take(length)?)
            .map_err(|_| Unusable("a name is not UTF-8".into()))?;
        if names.number(Some(&name)) as usize != position {
            return Err(Unusable("a name is listed twice".into()));
        }
    }
    let name_ok = |n: u32| (n as usize) <= name_count;

    let seqs: Vec<i64> = input.column(count, 8, |b| i64::from_le_bytes(array(b)))?;
    let rowids: Vec<i64> = input.column(count, 8, |b| i64::from_le_bytes(array(b)))?;
    let scales: Vec<f32> = input.column(count, 4, |b| f32::from_le_bytes(array(b)))?;
    let facets: Vec<Facets> = input.column(count, SLOT_BYTES - 20, |b| {
        let number = |i: usize| u32::from_le_bytes(array(&b[i * 4..i * 4 + 4]));
        Facets {
            user: number(0),
            category: number(1),
            project: number(2),
            machine: number(3),
            agent: number(4),
            created_at_ms: i64::from_le_bytes(array(&b[20..28])),
            restricted: b[28] & RESTRICTED != 0,
            live: b[28] & LIVE != 0,
        }
    })?;
    // Read as bytes into the buffer the index keeps (`u8` to `i8` reuses it in place).
    let codes: Vec<i8> = input
        .take(count * dims)?
        .into_iter()
        .map(|b| b as i8)
        .collect();
    if input.left != 0 {
        return Err(Unusable("bytes past the last slot".into()));
    }
    let sum = input.sum.finish();
    let mut stored_sum = [0u8; 8];
    io::Read::read_exact(&mut input.inner, &mut stored_sum)?;
    if sum.to_le_bytes() != stored_sum {
        return Err(Unusable("its checksum does not match".into()));
    }

    let mut slot_of_memory = HashMap::with_capacity(count);
    let mut newest: Option<(usize, i64)> = None;
    for slot in 0..count {
        let facets = &facets[slot];
        if seqs[slot] <= 0 || seqs[slot] > last_seq {
            return Err(Unusable("a seq out of range".into()));
        }
        if !(scales[slot].is_finite() && scales[slot] >= 0.0) {
            return Err(Unusable("a scale out of range".into()));
        }
        if ![
            facets.user,
            facets.category,
            facets.project,
            facets.machine,
            facets.agent,
        ]
        .into_iter()
        .all(name_ok)
        {
            return Err(Unusable("a name number out of range".into()));
        }
        if slot_of_memory.insert(rowids[slot], slot).is_some() {
            return Err(Unusable("a memory listed twice".into()));
        }
        if newest.is_none_or(|(best, _)| seqs[slot] > seqs[best]) {
            newest = Some((slot, rowids[slot]));
        }
    }
    let sums = codes.chunks_exact(dims.max(1)).map(code_sum).collect();
    Ok(Loaded {
        slots: Slots {
            last_seq,
            slot_of_memory,
            seqs,
            scales,
            sums,
            facets,
            names,
            codes,
            ..Slots::default()
        },
        newest,
    })
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut array = [0; N];
    array.copy_from_slice(bytes);
    array
}

/// Reads the body of a file front to back, summing what it reads; no read goes past the
/// body's end (the checksum after it is read apart).
struct Input<R> {
    inner: R,
    sum: Checksum,
    left: u64,
}

impl<R: io::Read> Input<R> {
    fn take(&mut self, n: usize) -> Result<Vec<u8>, Unusable> {
        if n as u64 > self.left {
            return Err(Unusable("ends early".into()));
        }
        let mut bytes = vec![0; n];
        self.inner.read_exact(&mut bytes)?;
        self.sum.update(&bytes);
        self.left -= n as u64;
        Ok(bytes)
    }

    fn u32(&mut self) -> Result<u32, Unusable> {
        Ok(u32::from_le_bytes(array(&self.take(4)?)))
    }

    fn u64(&mut self) -> Result<u64, Unusable> {
        Ok(u64::from_le_bytes(array(&self.take(8)?)))
    }

    fn i64(&mut self) -> Result<i64, Unusable> {
        Ok(i64::from_le_bytes(array(&self.take(8)?)))
    }

    /// `count` values of `width` bytes each.
    fn column<T>(
        &mut self,
        count: usize,
        width: usize,
        value: impl Fn(&[u8]) -> T,
    ) -> Result<Vec<T>, Unusable> {
        let bytes = self.take(count * width)?;
        Ok(bytes.chunks_exact(width).map(value).collect())
    }
}

/// A writer that sums what passes through it.
struct Summing<W> {
    inner: W,
    sum: Checksum,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.sum.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A 64-bit checksum against a torn or damaged file (not against someone who can write the
/// data directory: they could as well write the database). Four independent lanes of
/// multiply and xor over 32-byte blocks, so it runs at memory speed: it covers tens of MB
/// at every start. Fed in pieces of any size, it sums the same as fed at once.
struct Checksum {
    lanes: [u64; 4],
    pending: [u8; 32],
    pending_len: usize,
    total: u64,
}

impl Default for Checksum {
    fn default() -> Self {
        Self {
            lanes: [1, 2, 3, 4],
            pending: [0; 32],
            pending_len: 0,
            total: 0,
        }
    }
}

const LANE_KEYS: [u64; 4] = [
    0x9E37_79B9_7F4A_7C15,
    0xC2B2_AE3D_27D4_EB4F,
    0x1656_67B1_9E37_79F9,
    0x27D4_EB2F_1656_67C5,
];

impl Checksum {
    fn block(&mut self, block: &[u8]) {
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            let word = u64::from_le_bytes(array(&block[i * 8..i * 8 + 8]));
            *lane = (*lane ^ word).wrapping_mul(LANE_KEYS[i]).rotate_left(29);
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.pending_len > 0 {
            let wanted = (32 - self.pending_len).min(bytes.len());
            self.pending[self.pending_len..self.pending_len + wanted]
                .copy_from_slice(&bytes[..wanted]);
            self.pending_len += wanted;
            bytes = &bytes[wanted..];
            if self.pending_len < 32 {
                return;
            }
            let pending = self.pending;
            self.block(&pending);
            self.pending_len = 0;
        }
        let mut blocks = bytes.chunks_exact(32);
        for block in &mut blocks {
            self.block(block);
        }
        let rest = blocks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    fn finish(mut self) -> u64 {
        // The last block, padded with zeros (always one: the length is folded in below).
        let mut tail = [0u8; 32];
        tail[..self.pending_len].copy_from_slice(&self.pending[..self.pending_len]);
        self.block(&tail);
        self.lanes.iter().fold(self.total, |sum, &lane| {
            (sum ^ lane).wrapping_mul(LANE_KEYS[0]).rotate_left(31)
        })
    }
}

#[cfg(test)]
fn checksum(bytes: &[u8]) -> u64 {
    let mut sum = Checksum::default();
    sum.update(bytes);
    sum.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::to_blob;

    const DIMS: usize = 8;

    fn facets(slots: &mut Slots, user: &str, created_at_ms: i64) -> Facets {
        Facets {
            user: slots.names.number(Some(user)),
            category: slots.names.number(Some("infrastructure")),
            project: slots.names.number(None),
            machine: slots.names.number(Some("node-a")),
            agent: slots.names.number(Some("agent-7")),
            created_at_ms,
            restricted: created_at_ms % 2 == 0,
            live: true,
        }
    }

    /// Four vectors; the one of memory 12 (the only one of `erin-erased`) vacated since.
    fn sample() -> Slots {
        let mut slots = Slots::default();
        for (seq, rowid, user) in [
            (3, 10, "ann"),
            (5, 11, "bob"),
            (9, 12, "erin-erased"),
            (7, 13, "ann"),
        ] {
            let vector: Vec<f32> = (0..DIMS)
                .map(|i| ((seq * 7 + i as i64) % 5) as f32 - 2.0)
                .collect();
            let facets = facets(&mut slots, user, seq * 1000);
            assert!(slots.insert(seq, rowid, &to_blob(&vector), facets, DIMS));
        }
        slots.last_seq = 9;
        let erased = slots
            .slot_of_memory
            .remove(&12)
            .expect("memory 12 has a slot");
        slots.seqs[erased] = 0;
        slots.vacant += 1;
        slots
    }

    /// The bytes of the file `write` makes of `slots`.
    fn encoded(slots: &Slots) -> Vec<u8> {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let file = folder.path().join("index");
        write(&file, "model/1", DIMS, slots, slots.last_seq, |_| true)
            .expect("written")
            .commit(&file)
            .expect("in place");
        std::fs::read(&file).expect("the file")
    }

    /// The name a slot's facet number stands for.
    fn name(slots: &Slots, number: u32) -> Option<&str> {
        slots
            .names
            .numbers
            .iter()
            .find(|&(_, &n)| n == number)
            .map(|(name, _)| name.as_str())
    }

    #[test]
    fn a_file_holds_the_live_slots_and_only_the_names_they_use() {
        let slots = sample();
        let bytes = encoded(&slots);
        assert!(
            !bytes.windows(11).any(|w| w == b"erin-erased"),
            "a name no written slot uses is not written"
        );
        let folder = tempfile::tempdir().expect("a temporary folder");
        let file = folder.path().join("hv.sqlite3-vectors");
        let pending =
            write(&file, "model/1", DIMS, &slots, slots.last_seq, |_| true).expect("written");
        assert_eq!(pending.written, 3);
        pending.commit(&file).expect("in place");
        assert_eq!(
            std::fs::read_dir(folder.path())
                .expect("the folder")
                .count(),
            1,
            "no temporary file is left"
        );
        let loaded = read(&file, "model/1", DIMS).expect("read back");
        let read = &loaded.slots;
        assert_eq!(read.last_seq, 9);
        assert_eq!(read.seqs.len(), 3);
        for (&rowid, &slot) in &slots.slot_of_memory {
            let again = read.slot_of_memory[&rowid];
            assert_eq!(read.seqs[again], slots.seqs[slot]);
            assert_eq!(read.scales[again].to_bits(), slots.scales[slot].to_bits());
            assert_eq!(read.sums[again], slots.sums[slot]);
            assert_eq!(
                read.codes[again * DIMS..(again + 1) * DIMS],
                slots.codes[slot * DIMS..(slot + 1) * DIMS]
            );
            let (was, is) = (slots.facets[slot], read.facets[again]);
            assert_eq!(name(read, is.user), name(&slots, was.user));
            assert_eq!(name(read, is.agent), name(&slots, was.agent));
            assert_eq!(is.project, 0);
            assert_eq!(
                (is.created_at_ms, is.restricted, is.live),
                (was.created_at_ms, was.restricted, was.live)
            );
        }
        let (newest, rowid) = loaded.newest.expect("a newest slot");
        assert_eq!((read.seqs[newest], rowid), (7, 13));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file)
                .expect("the file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_torn_damaged_or_foreign_file_is_refused() {
        let bytes = encoded(&sample());
        let folder = tempfile::tempdir().expect("a temporary folder");
        let file = folder.path().join("index");
        let refused = |bytes: &[u8], model: &str, dims: usize| {
            std::fs::write(&file, bytes).expect("written");
            read(&file, model, dims).is_err()
        };
        assert!(!refused(&bytes, "model/1", DIMS));
        for cut in [0, 7, 8, 40, bytes.len() / 2, bytes.len() - 1] {
            assert!(refused(&bytes[..cut], "model/1", DIMS), "cut at {cut}");
        }
        for at in (0..bytes.len()).step_by(7) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert!(refused(&damaged, "model/1", DIMS), "byte {at} flipped");
        }
        assert!(refused(&bytes, "model/2", DIMS));
        assert!(refused(&bytes, "model/1", DIMS + 1));
    }

    /// A file whose checksum is right but whose content is not what `encode` writes.
    #[test]
    fn a_well_sealed_file_that_breaks_the_rules_is_refused() {
        let bytes = encoded(&sample());
        let reseal = |mut body: Vec<u8>| {
            let sum = checksum(&body);
            body.extend_from_slice(&sum.to_le_bytes());
            body
        };
        let body = &bytes[..bytes.len() - 8];
        // The header: magic, dims, model id (4 + 7 bytes), last seq, count, then names.
        let names_at = 8 + 4 + 4 + 7 + 8 + 8;
        let count = u64::from_le_bytes(array(&body[names_at - 8..names_at])) as usize;
        assert_eq!(count, 3);
        let name_count = u32::from_le_bytes(array(&body[names_at..names_at + 4])) as usize;
        let mut at = names_at + 4;
        for _ in 0..name_count {
            at += 4 + u32::from_le_bytes(array(&body[at..at + 4])) as usize;
        }
        let (seqs_at, rowids_at) = (at, at + 8 * count);
        let facets_at = rowids_at + 12 * count;
        let folder = tempfile::tempdir().expect("a temporary folder");
        let file = folder.path().join("index");
        let refused = |body: Vec<u8>| {
            std::fs::write(&file, reseal(body)).expect("written");
            read(&file, "model/1", DIMS).map(|_| ()).err().map(|e| e.0)
        };
        assert_eq!(refused(body.to_vec()), None);

        let mut changed = body.to_vec();
        changed[facets_at..facets_at + 4].copy_from_slice(&(name_count as u32 + 1).to_le_bytes());
        assert_eq!(
            refused(changed).as_deref(),
            Some("a name number out of range")
        );

        let mut changed = body.to_vec();
        let first_rowid = changed[rowids_at..rowids_at + 8].to_vec();
        changed[rowids_at + 8..rowids_at + 16].copy_from_slice(&first_rowid);
        assert_eq!(refused(changed).as_deref(), Some("a memory listed twice"));

        let mut changed = body.to_vec();
        changed[seqs_at..seqs_at + 8].copy_from_slice(&10i64.to_le_bytes());
        assert_eq!(refused(changed).as_deref(), Some("a seq out of range"));

        let mut changed = body.to_vec();
        changed[names_at - 8..names_at].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert_eq!(
            refused(changed).as_deref(),
            Some("counts past the end of the file")
        );

        let mut changed = body.to_vec();
        changed.push(0);
        assert_eq!(
            refused(changed).as_deref(),
            Some("bytes past the last slot")
        );
    }
}
