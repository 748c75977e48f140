//! Exit codes shared by every command (sysexits where one fits).

/// A bad configuration, option value or policy (sysexits EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
/// The socket cannot be taken: in use, or a path that must not be replaced (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Output could not be written (sysexits EX_IOERR).
pub const EXIT_IO: u8 = 74;
