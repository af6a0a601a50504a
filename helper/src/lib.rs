//! doppel-helper's library part: the D-Bus contract (names, methods, errors, wire types) and the
//! client that `doppel-core` uses to call the helper. The service itself is the binary; every
//! line of it runs as root, so it lives apart and depends on as little as possible.

pub mod client;
pub mod wire;
