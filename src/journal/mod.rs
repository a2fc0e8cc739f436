//! Nothing an agent does goes unrecorded: one record per request, made where it is parsed.
//!
//! [`record`]: the [`JobRecord`] that every later step reads — the audit line, the checkpoint
//! taken before a job that may change data, the undo step's name in the GUI.
//! [`state`]: the user's state directory (checkpoints and the audit log by default).
//! [`audit`]: the audit log, one JSON line per request, written on its own thread.
//! [`effect`]: which requests may change Blender's data (the one rule; everything not known to
//! only read is taken to change).

pub mod audit;
pub mod effect;
pub mod record;
pub mod state;

pub use audit::{outcome_of, Audit, AuditConfig, CodeMode, Event};
pub use effect::effect;
pub use record::{Checkpoint, Effect, JobRecord, Listener, Protocol};
pub use state::{check_private, private_dir, state_dir};
