//! Hybrid logical clocks: every change in the fleet carries an [`HlcStamp`] that orders it
//! against every other change, close to wall-clock order yet never backwards on one machine.
//!
//! A stamp packs wall-clock milliseconds in the high 48 bits and a logical counter in the low
//! 16, so it is one `u64` that sorts as it should and stores as one SQLite integer. Ties
//! between machines are broken by the origin machine id (see [`HlcStamp::cmp`]).

use std::cmp::Ordering;
use std::fmt;

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// The largest stamp time: stamps are stored as SQLite's signed 64-bit integers, so a
/// clock past this would store negative stamps that sort before everything. The clock
/// stops here instead of wrapping (a peer's stamp that far ahead is refused long before,
/// see `sync.max_clock_skew_secs`).
pub const MAX_TIME: u64 = i64::MAX as u64;

/// A point in the fleet's order of changes: a hybrid-logical time plus the machine that made
/// the change. Ordered by time, then by origin, so two machines never tie.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HlcStamp {
    /// Wall milliseconds << 16 | logical counter.
    pub time: u64,
    /// The machine id of the change's origin.
    pub origin: String,
}

impl HlcStamp {
    /// Builds a stamp from its packed time and origin.
    pub fn new(time: u64, origin: impl Into<String>) -> Self {
        Self {
            time,
            origin: origin.into(),
        }
    }

    /// The wall-clock milliseconds part of the stamp.
    pub fn wall_ms(&self) -> u64 {
        self.time >> LOGICAL_BITS
    }

    /// The logical counter part of the stamp.
    pub fn logical(&self) -> u16 {
        (self.time & LOGICAL_MASK) as u16
    }
}

impl Ord for HlcStamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.time
            .cmp(&other.time)
            .then_with(|| self.origin.cmp(&other.origin))
    }
}

impl PartialOrd for HlcStamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for HlcStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.wall_ms(), self.logical(), self.origin)
    }
}

/// Packs wall milliseconds and a logical counter into a stamp time.
pub fn pack(wall_ms: u64, logical: u16) -> u64 {
    (wall_ms << LOGICAL_BITS) | u64::from(logical)
}

/// The clock of one machine. It issues stamps that are strictly greater than every stamp it
/// issued or observed before, even when the wall clock steps back.
///
/// The engine keeps the last issued time durable (it is the newest op-log entry), and calls
/// [`HybridClock::observe`] with it before each write, so several processes sharing one data
/// directory still issue increasing stamps.
#[derive(Debug, Clone)]
pub struct HybridClock {
    last: u64,
}

impl HybridClock {
    /// A clock that has seen nothing yet.
    pub fn new() -> Self {
        Self { last: 0 }
    }

    /// Moves the clock past `time` (a stamp issued here earlier, or received from a peer).
    pub fn observe(&mut self, time: u64) {
        self.last = self.last.max(time.min(MAX_TIME));
    }

    /// Issues the next stamp time, given the wall clock `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> u64 {
        let wall = pack(now_ms, 0);
        // When the wall clock has not moved past the last stamp, count logically; a full
        // counter rolls into the next millisecond, which keeps stamps strictly increasing.
        // At MAX_TIME the clock stands still rather than wrap into negative stamps.
        self.last = if wall > self.last {
            wall.min(MAX_TIME)
        } else {
            self.last.saturating_add(1).min(MAX_TIME)
        };
        self.last
    }
}

impl Default for HybridClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_wall_clock_when_it_moves_forward() {
        let mut clock = HybridClock::new();
        let a = clock.tick(1_000);
        let b = clock.tick(2_000);
        assert_eq!(HlcStamp::new(a, "m").wall_ms(), 1_000);
        assert_eq!(HlcStamp::new(b, "m").wall_ms(), 2_000);
    }

    #[test]
    fn never_goes_backwards_when_the_wall_clock_does() {
        let mut clock = HybridClock::new();
        let a = clock.tick(5_000);
        let b = clock.tick(4_000);
        let c = clock.tick(4_000);
        assert!(a < b && b < c);
        assert_eq!(HlcStamp::new(c, "m").logical(), 2);
    }

    #[test]
    fn jumps_past_an_observed_remote_stamp() {
        let mut clock = HybridClock::new();
        clock.observe(pack(9_000, 7));
        let next = clock.tick(1_000);
        assert_eq!(next, pack(9_000, 8));
    }

    #[test]
    fn a_full_logical_counter_rolls_into_the_next_millisecond() {
        let mut clock = HybridClock::new();
        clock.observe(pack(10, u16::MAX));
        assert_eq!(clock.tick(10), pack(11, 0));
    }

    #[test]
    fn never_wraps_past_the_largest_storable_stamp() {
        let mut clock = HybridClock::new();
        clock.observe(u64::MAX);
        assert_eq!(clock.tick(1_000), MAX_TIME);
        assert_eq!(clock.tick(1_000), MAX_TIME);
        assert!(
            clock.tick(1_000) as i64 > 0,
            "a stamp must never turn negative"
        );
    }

    #[test]
    fn origin_breaks_ties_between_machines() {
        let a = HlcStamp::new(pack(1, 0), "alpha");
        let b = HlcStamp::new(pack(1, 0), "beta");
        assert!(a < b);
        assert_eq!(b.to_string(), "1.0@beta");
    }
}
