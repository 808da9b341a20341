//! plugin-azure-storage: a CI plugin that moves build artifacts between the workspace
//! and Azure Blob Storage, with verified, parallel, chunked transfers.
//!
//! `main.rs` is thin; the library is split as docs/design.md describes: settings and
//! config, auth, the HTTP layer, one module per storage service, and the transfer
//! engine.

pub mod auth;
pub mod buffers;
pub mod cache;
pub mod config;
pub mod docgen;
pub mod http;
pub mod settings;
pub mod storage;
pub mod transfer;
