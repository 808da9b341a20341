//! All integration tests, one binary (so Azurite starts once): each test runs the real
//! plugin binary against real parts, and checks what a user would check.

mod support;

mod auth;
mod blob_download;
mod blob_upload;
mod cache;
mod ci_encoding;
mod delete;
mod docs;
mod fault_proxy;
mod faults;
mod files;
mod files_fake;
mod hostile_download;
mod hostile_network;
mod hostile_settings;
mod hostile_upload;
mod image;
mod links;
mod msrv;
mod output;
mod release;
mod runners;
mod settings;
mod sync;
mod trust;
