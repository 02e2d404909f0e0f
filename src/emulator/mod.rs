//! Emulators of the three providers' token APIs, served on loopback (placeholder).
