//! Utilities: the bottom layer of the node. Nothing here imports another
//! module of the crate except other utilities (`files`, `sealed` are
//! utilities too, kept at the crate root where the peer driver and the
//! gateway name them).

pub(crate) mod admission;
pub(crate) mod blocking;
pub(crate) mod clock;
pub(crate) mod dirfd;
pub(crate) mod hold;
