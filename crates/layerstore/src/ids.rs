use crate::{Result, StoreError};
use rand::Rng;

/// The kinds of object the store names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Sandbox,
    Checkpoint,
    Layer,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::Sandbox => "sb",
            IdKind::Checkpoint => "ck",
            IdKind::Layer => "ly",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            IdKind::Sandbox => "sandbox",
            IdKind::Checkpoint => "checkpoint",
            IdKind::Layer => "layer",
        }
    }
    /// Which kind an id string claims to be, by its prefix.
    pub fn of(id: &str) -> Option<IdKind> {
        [IdKind::Sandbox, IdKind::Checkpoint, IdKind::Layer]
            .into_iter()
            .find(|k| {
                id.strip_prefix(k.prefix())
                    .is_some_and(|r| r.starts_with('-'))
            })
    }
}

/// A fresh random id such as `ck-3f9a0c12d4e5`.
pub fn new_id(kind: IdKind) -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("{}-{:012x}", kind.prefix(), n & 0xffff_ffff_ffff)
}

/// Checks that `id` is well-formed for `kind`. Ids become file names, so this is also what
/// keeps `../` and friends out of the store.
pub fn validate_id(kind: IdKind, id: &str) -> Result<()> {
    let ok = id
        .strip_prefix(kind.prefix())
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|hex| {
            (4..=32).contains(&hex.len())
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidId {
            kind: kind.name(),
            prefix: kind.prefix(),
            id: id.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_traversal() {
        for k in [IdKind::Sandbox, IdKind::Checkpoint, IdKind::Layer] {
            let id = new_id(k);
            validate_id(k, &id).unwrap();
            assert_eq!(IdKind::of(&id), Some(k));
        }
        assert!(validate_id(IdKind::Sandbox, "sb-../../etc").is_err());
        assert!(validate_id(IdKind::Sandbox, "ck-0123456789ab").is_err());
        assert!(validate_id(IdKind::Sandbox, "sb-").is_err());
        assert!(validate_id(IdKind::Sandbox, "sb-ABCDEF").is_err());
        assert_eq!(IdKind::of("nope"), None);
    }
}
