//! The `pollen` command line: one binary for every role (scheduler, daemon) and every command
//! a person types (get, demo). This crate only parses arguments and wires the role crates
//! together; the behaviour lives in `pollen-scheduler`, `pollen-daemon` and below.
//!
//! The multi-process tests' kit (clusters of processes, origins, a registry) lives in
//! `pollen-testkit`, which this crate does not depend on.

#![allow(clippy::result_large_err)] // tonic::Status is the error type of every RPC.

pub mod cli;
mod cmd;
mod signals;
