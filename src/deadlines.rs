//! The supervisor's deadlines, each bounded by two clocks.
//!
//! A deadline is a wall-clock instant (SPEC: after a suspend or a forward jump, due
//! refreshes run at once), and also the monotonic instant the same distance away when it was
//! set. It is due when either clock reaches it: the wall clock catches suspends and forward
//! steps (the monotonic clock stands still during a suspend), the monotonic clock catches a
//! wall clock stepped back (an hour back would otherwise stop every refresh for an hour).
//! Pure: both clocks are passed in.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

/// The current time on both clocks.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub wall: SystemTime,
    pub mono: Instant,
}

impl Now {
    pub fn read() -> Now {
        Now {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }
}

#[derive(Default)]
pub struct Deadlines {
    wall: BTreeSet<(SystemTime, String)>,
    mono: BTreeSet<(Instant, String)>,
    by_name: HashMap<String, (SystemTime, Instant)>,
}

impl Deadlines {
    /// Sets (or moves) `name`'s deadline to the wall instant `at`.
    pub fn insert(&mut self, name: &str, at: SystemTime, now: Now) {
        self.remove(name);
        let mono = now.mono + at.duration_since(now.wall).unwrap_or_default();
        self.wall.insert((at, name.to_owned()));
        self.mono.insert((mono, name.to_owned()));
        self.by_name.insert(name.to_owned(), (at, mono));
    }

    pub fn remove(&mut self, name: &str) -> bool {
        match self.by_name.remove(name) {
            Some((at, mono)) => {
                self.wall.remove(&(at, name.to_owned()));
                self.mono.remove(&(mono, name.to_owned()));
                true
            }
            None => false,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Removes and returns one deadline that either clock says is due, with its wall
    /// instant (later than `now.wall` when only the monotonic clock says so).
    pub fn pop_due(&mut self, now: Now) -> Option<(String, SystemTime)> {
        let by_wall = self.wall.first().filter(|(at, _)| *at <= now.wall);
        let by_mono = self.mono.first().filter(|(at, _)| *at <= now.mono);
        let name = by_wall.map(|(_, n)| n).or(by_mono.map(|(_, n)| n))?.clone();
        let (at, _) = self.by_name[&name];
        self.remove(&name);
        Some((name, at))
    }

    /// How long until the next deadline by either clock (zero if one is due).
    pub fn until_next(&self, now: Now) -> Option<Duration> {
        let wall = self
            .wall
            .first()
            .map(|(at, _)| at.duration_since(now.wall).unwrap_or_default());
        let mono = self
            .mono
            .first()
            .map(|(at, _)| at.saturating_duration_since(now.mono));
        match (wall, mono) {
            (Some(w), Some(m)) => Some(w.min(m)),
            (w, m) => w.or(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const H: Duration = Duration::from_secs(3600);

    fn start() -> Now {
        Now {
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000),
            mono: Instant::now(),
        }
    }

    /// `now` moved on by `real` seconds of monotonic time, with the wall clock stepped by
    /// `step` (positive: forward).
    fn later(now: Now, real: Duration, step: i64) -> Now {
        let wall = now.wall + real;
        Now {
            wall: if step >= 0 {
                wall + Duration::from_secs(step as u64)
            } else {
                wall - Duration::from_secs(step.unsigned_abs())
            },
            mono: now.mono + real,
        }
    }

    #[test]
    fn due_by_whichever_clock_gets_there_first() {
        // (seconds until the deadline, real seconds later, wall step) -> due?
        let cases: [(u32, u32, i64, bool); 7] = [
            (10, 5, 0, false),
            (10, 10, 0, true),
            // A forward step (or a suspend, which stops the monotonic clock) is seen on the wall.
            (3000, 1, 3000, true),
            (3000, 1, 2000, false),
            // The wall clock stepped back an hour: the monotonic clock still says due.
            (10, 10, -3600, true),
            (10, 9, -3600, false),
            (0, 0, -3600, true),
        ];
        for (deadline, real, step, due) in cases {
            let t0 = start();
            let mut d = Deadlines::default();
            d.insert("a", t0.wall + deadline * S, t0);
            let now = later(t0, real * S, step);
            let popped = d.pop_due(now);
            assert_eq!(popped.is_some(), due, "{deadline} {real} {step}");
            if let Some((name, at)) = popped {
                assert_eq!((name.as_str(), at), ("a", t0.wall + deadline * S));
                assert!(d.is_empty());
            }
        }
    }

    #[test]
    fn the_next_wake_is_the_earlier_of_both_clocks() {
        let t0 = start();
        let mut d = Deadlines::default();
        assert_eq!(d.until_next(t0), None);
        d.insert("a", t0.wall + 60 * S, t0);
        d.insert("b", t0.wall + 90 * S, t0);
        assert_eq!(d.until_next(t0), Some(60 * S));
        // The wall clock stepped back an hour: still 50 s of real time to wait, not 3650 s.
        assert_eq!(d.until_next(later(t0, 10 * S, -3600)), Some(50 * S));
        // Forward: the wall says both are overdue.
        assert_eq!(d.until_next(later(t0, S, 7200)), Some(Duration::ZERO));
    }

    #[test]
    fn insert_replaces_and_remove_forgets() {
        let t0 = start();
        let mut d = Deadlines::default();
        d.insert("a", t0.wall + 60 * S, t0);
        d.insert("a", t0.wall + 5 * S, t0);
        assert_eq!(d.len(), 1);
        assert_eq!(d.until_next(t0), Some(5 * S));
        assert!(d.remove("a"));
        assert!(!d.remove("a"));
        assert_eq!(d.pop_due(later(t0, H, 0)), None);
        // Several due: all come out, earliest wall deadline first.
        d.insert("late", t0.wall + 2 * S, t0);
        d.insert("early", t0.wall + S, t0);
        let now = later(t0, 3 * S, 0);
        assert_eq!(d.pop_due(now).unwrap().0, "early");
        assert_eq!(d.pop_due(now).unwrap().0, "late");
        assert_eq!(d.pop_due(now), None);
    }
}
