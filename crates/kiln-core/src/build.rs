//! Preparing a template into builds and running them.
