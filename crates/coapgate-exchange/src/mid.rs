/// Message IDs for messages the endpoint originates (separate responses,
/// NON responses).
///
/// Sequential from a caller-chosen start, as RFC 7252 §4.4 suggests: with
/// 65 536 IDs, one peer would need over 265 messages per second from us to
/// reuse one within EXCHANGE_LIFETIME.
#[derive(Debug, Clone)]
pub struct MessageIds {
    next: u16,
}

impl MessageIds {
    /// Starts at `start` (pick it at random so restarts do not reuse IDs).
    pub fn new(start: u16) -> Self {
        Self { next: start }
    }

    /// The next message ID.
    pub fn next_id(&mut self) -> u16 {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        id
    }

    /// The next message ID for which `accept` holds (tries at most all 65 536).
    ///
    /// Used where the encoded ID must avoid certain bytes (1NCE's C SDK
    /// searches a whole `/bootstrap` response for the text `89`).
    pub fn next_id_where(&mut self, mut accept: impl FnMut(u16) -> bool) -> u16 {
        for _ in 0..=u16::MAX as u32 {
            let id = self.next_id();
            if accept(id) {
                return id;
            }
        }
        self.next_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_and_wrapping() {
        let mut ids = MessageIds::new(u16::MAX);
        assert_eq!(ids.next_id(), u16::MAX);
        assert_eq!(ids.next_id(), 0);
        assert_eq!(ids.next_id(), 1);
    }

    #[test]
    fn skips_rejected_ids() {
        let mut ids = MessageIds::new(0x3838);
        let id = ids.next_id_where(|id| !id.to_be_bytes().contains(&0x38));
        assert_eq!(id, 0x3900);
    }
}
