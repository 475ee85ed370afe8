//! Hubbub's wire types, with no I/O and no async runtime.
//!
//! - [`link`]: the frames nodes exchange over their WebSocket links, encoded with
//!   postcard behind a magic number and a version byte ([`link::encode`],
//!   [`link::decode`]);
//! - [`chat`]: the chat routing frames carried inside link frames;
//! - [`client`]: the JSON client protocol spoken at `GET /ws`.
//!
//! Every decoder here reads bytes from the network, so every decoder returns a
//! plain error value for bad input and never panics.

pub mod chat;
pub mod client;
pub mod link;
