//! The keys rooms and users are placed by. A prefix per kind keeps a room and
//! a user of the same name independent.

/// The ring key of a room: `room_key("general") == b"room:general"`.
///
/// Returned as bytes because that is what [`Ring::owner`](crate::Ring::owner)
/// takes; the name's UTF-8 is used as is, with no normalisation.
pub fn room_key(room: &str) -> Vec<u8> {
    prefixed(b"room:", room)
}

/// The ring key of a user: `user_key("alice") == b"user:alice"`.
///
/// Returned as bytes because that is what [`Ring::owner`](crate::Ring::owner)
/// takes; the name's UTF-8 is used as is, with no normalisation.
pub fn user_key(user: &str) -> Vec<u8> {
    prefixed(b"user:", user)
}

fn prefixed(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + name.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(name.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_names() {
        assert_eq!(room_key("general"), b"room:general");
        assert_eq!(user_key("alice"), b"user:alice");
        assert_eq!(room_key(""), b"room:");
        assert_eq!(user_key("zoë"), "user:zoë".as_bytes());
    }
}
