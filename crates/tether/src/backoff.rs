//! Reconnect backoff, for every reconnecting thing in Tether (the [`Robot`](crate::Robot)
//! and the clever-show dialer): exponential with "equal jitter", pure so that it is tested
//! without clocks or sockets.
//!
//! The n-th consecutive retry waits a random time between half and all of
//! `initial * 2^n`, capped at `max`. Jitter spreads the reconnects of many clients that
//! lost the same server at the same moment; the guaranteed half keeps a retry from coming
//! back at once.

use std::time::Duration;

/// The backoff policy and where a run of failures has got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starting at `initial` (at least 1 ms), doubling up to `max` (at least `initial`).
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The first delay.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The longest delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay before the next retry, jittered by `random` (any `u64`), and the step to
    /// the one after it.
    pub fn next_delay_with(&mut self, random: u64) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = step / 2;
        let span = (step - half).as_nanos().max(1);
        half + Duration::from_nanos((u128::from(random) % span) as u64)
    }

    /// [`next_delay_with`](Self::next_delay_with) drawing its own random number.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(crate::random::u64())
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap_with_the_jitter_inside_half_to_all() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let steps = [100, 200, 400, 800, 1000, 1000];
        for step in steps {
            let step = step * MS;
            let mut probe = b;
            let low = probe.next_delay_with(0);
            let mut probe = b;
            let high = probe.next_delay_with(u64::MAX - 1);
            assert_eq!(low, step / 2, "lowest for {step:?}");
            assert!(
                high <= step && high > step / 2,
                "highest {high:?} for {step:?}"
            );
            let d = b.next_delay_with(12345);
            assert!(d >= step / 2 && d <= step, "{d:?} for {step:?}");
        }
    }

    #[test]
    fn reset_starts_over_and_bounds_are_sane() {
        let mut b = Backoff::new(10 * MS, 40 * MS);
        for _ in 0..5 {
            b.next_delay_with(0);
        }
        assert_eq!(b.next_delay_with(0), 20 * MS);
        b.reset();
        assert_eq!(b.next_delay_with(0), 5 * MS);
        // A zero initial delay becomes 1 ms; a max below it becomes the initial delay.
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!((b.initial(), b.max()), (MS, MS));
        let d = b.next_delay();
        assert!(d >= MS / 2 && d <= MS, "{d:?}");
    }
}
