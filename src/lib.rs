//! The `pollen` command line: one binary for every role (scheduler, daemon) and every command
//! a person types (get, demo). This crate only parses arguments and wires the role crates
//! together; the behaviour lives in `pollen-scheduler`, `pollen-daemon` and below.
//!
//! [`origin`] is public because the demo and the multi-process tests both need a real HTTP
//! origin that counts the bytes it serves and can misbehave on request.

#![allow(clippy::result_large_err)] // tonic::Status is the error type of every RPC.

pub mod cli;
pub mod cluster;
mod cmd;
pub mod origin;
pub mod registry_kit;
mod signals;
