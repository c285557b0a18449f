//! `Signal`: how a store wakes its background threads, and tells them to stop.

use std::time::Duration;

use parking_lot::{Condvar, Mutex};

#[derive(Default)]
struct State {
    kicked: bool,
    closed: bool,
}

/// A wake-up flag with a condition variable: `wait` returns when kicked, when closed, or after
/// a timeout. Each background thread waits on its own signal and stops once it is closed.
#[derive(Default)]
pub(crate) struct Signal {
    state: Mutex<State>,
    cv: Condvar,
}

impl Signal {
    pub fn kick(&self) {
        self.state.lock().kicked = true;
        self.cv.notify_all();
    }

    /// Wakes the waiter for good: `is_closed` is true from now on.
    pub fn close(&self) {
        let mut s = self.state.lock();
        s.closed = true;
        s.kicked = true;
        drop(s);
        self.cv.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Waits up to `timeout` for a kick; returns whether there was one.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut s = self.state.lock();
        if !s.kicked {
            self.cv.wait_for(&mut s, timeout);
        }
        std::mem::take(&mut s.kicked)
    }
}

#[cfg(test)]
mod tests {
    use super::Signal;
    use std::time::Duration;

    #[test]
    fn a_kick_is_seen_once_and_close_stays() {
        let s = Signal::default();
        s.kick();
        assert!(s.wait(Duration::from_secs(5)));
        assert!(!s.wait(Duration::from_millis(1)));
        s.close();
        assert!(s.wait(Duration::from_secs(5)) && s.is_closed());
    }
}
