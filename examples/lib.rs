//! Shared helpers for the example programs (see `quickstart/`).
