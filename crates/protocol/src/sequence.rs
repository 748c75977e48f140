//! The per-connection id rule: every id strictly greater than the one before.

/// Tracks the last id seen on one connection.
#[derive(Debug, Default, Clone)]
pub struct IdSequence {
    last: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request id {id} is not greater than the previous id {previous}")]
pub struct OutOfOrder {
    pub id: u32,
    pub previous: u32,
}

impl IdSequence {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `id` if it is greater than every id accepted before.
    pub fn advance(&mut self, id: u32) -> Result<(), OutOfOrder> {
        match self.last {
            Some(previous) if id <= previous => Err(OutOfOrder { id, previous }),
            _ => {
                self.last = Some(id);
                Ok(())
            }
        }
    }

    /// A sequence that goes on from `last` (a connection handed over from another process).
    pub fn resume(last: Option<u32>) -> Self {
        IdSequence { last }
    }

    pub fn last(&self) -> Option<u32> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_strictly_increase() {
        let mut seq = IdSequence::new();
        assert!(seq.advance(1).is_ok());
        assert!(seq.advance(2).is_ok());
        assert!(seq.advance(10).is_ok(), "gaps are allowed");
        assert_eq!(
            seq.advance(10),
            Err(OutOfOrder {
                id: 10,
                previous: 10
            })
        );
        assert_eq!(
            seq.advance(3),
            Err(OutOfOrder {
                id: 3,
                previous: 10
            })
        );
        assert!(seq.advance(u32::MAX).is_ok());
        assert!(
            seq.advance(u32::MAX).is_err(),
            "no wrap-around past u32::MAX"
        );
    }
}
