//! Running `blendwire serve` instances, announced in the user's runtime directory so that
//! `blendwire list` (and an MCP server for several Blenders) can find them without being told ports.
//!
//! Each serving process writes one small JSON file, `<pid>-<port>.json`, into [`dir()`] and holds
//! an [`Announcement`] that removes it on drop; readers ([`discover`], [`choose`]) skip and delete
//! stale files. Never the token itself, only whether one is required.
//!
//! [`record`]: the record and its file format; [`mod@dir`]: the directory, announcing and reading;
//! [`mod@choose`]: picking one by a selector.

pub mod choose;
pub mod dir;
pub mod record;

pub use choose::{choose, choose_from, ChooseError};
pub use dir::{announce, dir, discover, discover_in, Announcement, InstanceError};
pub use record::{Announce, Instance, ParseError, Runtime, FORMAT};
