//! What travels on the wire: the unframed JSON stream cut into requests (`framing`), the request
//! and response shapes of the BLD Remote protocol (`protocol`), and answers written back as bytes
//! (`encode`, the measured hot path).

pub mod encode;
pub mod framing;
pub mod protocol;
