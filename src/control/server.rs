//! Control socket server (inside the supervisor).
